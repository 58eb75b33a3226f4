package coord

import (
	"context"

	"github.com/vigilhq/vigil/internal/alert"
)

// Alerts makes the coordinator an alert source: a warning for each agent
// that stopped answering.
func (c *Coordinator) Alerts(context.Context) []alert.Alert {
	var out []alert.Alert
	for _, ag := range c.View().Agents {
		if ag.Status == AgentLost {
			out = append(out, alert.New(alert.KindAgentLost, ag.ID, alert.Warning, "Agent "+ag.ID+" stopped answering", "its streams move to other agents"))
		}
	}
	return out
}
