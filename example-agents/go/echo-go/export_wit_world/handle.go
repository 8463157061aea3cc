// Package export_wit_world is the smallest Go agent: it answers <echoed>
// with the content of what it is sent. The benchmarks use it to measure what
// a Go agent costs (instantiation, a call, memory per instance) apart from
// any work it does.
package export_wit_world

import (
	"strings"

	"wit_component/agent"
	types "wit_component/agentserver_agent_types"

	witTypes "go.bytecodealliance.org/pkg/wit/types"
)

// Handle is the world's export.
func Handle(msg types.Envelope) witTypes.Result[[]string, types.Failure] {
	return agent.Serve(msg, echo)
}

func echo(msg agent.Message) ([]string, error) {
	start := strings.IndexByte(msg.Payload, '>')
	end := strings.LastIndexByte(msg.Payload, '<')
	if start < 0 || end <= start {
		return nil, agent.Malformed("expected one element")
	}
	return []string{"<echoed>" + msg.Payload[start+1:end] + "</echoed>"}, nil
}
