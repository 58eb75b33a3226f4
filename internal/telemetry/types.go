// Package telemetry turns MQTT messages from devices into stored readings:
// it parses and validates payloads on the seed's and Vigil's own topics,
// registers devices on their first message, tracks online/offline, batches
// readings into the store and expires old ones.
package telemetry

import (
	"time"
)

// Device statuses.
const (
	StatusOnline  = "online"
	StatusOffline = "offline"
)

// Device is a sensor or actuator known to Vigil. It is registered by its
// first message; ID is unique across sites.
type Device struct {
	ID          string    `json:"id"`
	Site        string    `json:"site"`
	Type        string    `json:"type"`
	Units       string    `json:"units"`
	Status      string    `json:"status"`
	StatusSince time.Time `json:"status_since"`
	FirstSeen   time.Time `json:"first_seen"`
	LastSeen    time.Time `json:"last_seen"`
	LastValue   *float64  `json:"last_value"`
	ClientID    string    `json:"client_id,omitempty"`
}

// Reading is one measurement of one device.
type Reading struct {
	DeviceID string    `json:"-"`
	Time     time.Time `json:"timestamp"` // when the device measured it (its own clock)
	Received time.Time `json:"received"`  // when Vigil received it
	Value    float64   `json:"value"`
	Units    string    `json:"units"`
	Seq      *int64    `json:"seq,omitempty"` // the device's message counter, when it sends one
}

// Event is one thing the pipeline stores: a reading or a status change of a
// device, in the order the broker delivered them.
type Event struct {
	DeviceID string
	Site     string
	Type     string // device type, when the message says it
	ClientID string // MQTT client id of the publisher, when known
	Time     time.Time
	// Exactly one of Reading and Status is set.
	Reading *Reading
	Status  string
}

// DeviceFilter narrows a device listing.
type DeviceFilter struct {
	Site string
}

// ReadingQuery selects readings of one device, oldest first. With Since
// zero it returns the latest Limit readings.
type ReadingQuery struct {
	DeviceID string
	Since    time.Time
	Limit    int
}
