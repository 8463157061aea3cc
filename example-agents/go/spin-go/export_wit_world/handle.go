// Package export_wit_world is a hostile agent for the tests: its handler
// never returns. Listens to spin-go; proves that the fuel and wall-time
// limits stop a Go program stuck in a loop, runtime and all.
package export_wit_world

import (
	"wit_component/agent"
	types "wit_component/agentserver_agent_types"

	witTypes "go.bytecodealliance.org/pkg/wit/types"
)

// spins is written on every turn so that the loop is not empty.
var spins uint64

// Handle is the world's export.
func Handle(msg types.Envelope) witTypes.Result[[]string, types.Failure] {
	return agent.Serve(msg, func(agent.Message) ([]string, error) {
		for {
			spins++
		}
	})
}
