// Package e2e holds Vigil's end-to-end tests: a whole Vigil started
// in-process on free loopback ports and a temporary data directory, driven by
// real peers (Mosquitto's clients, the paper's Python script, paho clients,
// the simulator) over real sockets.
package e2e
