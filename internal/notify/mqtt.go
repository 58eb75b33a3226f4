package notify

import (
	"encoding/json"
	"errors"
	"fmt"
)

// AlertTopic is the MQTT topic of a site's notifications; system-wide ones
// (site "") go to vigil/system/alerts.
func AlertTopic(site string) string {
	if site == "" {
		site = "system"
	}
	return "vigil/" + site + "/alerts"
}

// sendMQTT publishes the notification's JSON, QoS 1, not retained.
func (n *Notifier) sendMQTT(d *delivery) error {
	if n.pub == nil {
		return permanent(errors.New("mqtt: no broker to publish to"))
	}
	body, err := json.Marshal(d.n)
	if err != nil {
		return permanent(fmt.Errorf("encode mqtt payload: %w", err))
	}
	if err := n.pub.Publish(AlertTopic(d.n.Site), body, false, 1); err != nil {
		return fmt.Errorf("mqtt publish: %w", err)
	}
	return nil
}
