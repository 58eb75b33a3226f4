package mqttconn

import (
	"fmt"
	"strings"

	"github.com/eclipse/paho.golang/packets"
)

// ReasonName is the short name of an MQTT 5 reason code, as the
// specification gives it ("Not authorized"), or "" for a code it does not
// define. Error codes (0x80 and above) mean the same in every packet.
func ReasonName(code byte) string {
	switch code {
	case 0x00:
		return "Success"
	case 0x01, 0x02:
		return fmt.Sprintf("Granted QoS %d", code)
	case 0x10:
		return "No matching subscribers"
	case 0x91:
		return "Packet Identifier in use" // the acks' own
	}
	// DISCONNECT's and CONNACK's lists hold every other code.
	name, _, _ := strings.Cut((&packets.Disconnect{ReasonCode: code}).Reason(), " - ")
	if name == "" {
		name, _, _ = strings.Cut((&packets.Connack{ReasonCode: code}).Reason(), " - ")
	}
	return name
}
