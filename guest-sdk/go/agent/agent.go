// Package agent is the Go side of the agent contract (wit/agent.wit) for
// Go agents: a handler gets each message as a Message and returns payloads
// or an error, and Serve turns that into the result the host expects.
//
// A Go agent's package export_wit_world implements the generated export
// with it:
//
//	func Handle(msg types.Envelope) witTypes.Result[[]string, types.Failure] {
//		return agent.Serve(msg, handle)
//	}
//
// Serve also keeps Go's garbage collector out of the host's allocations.
// The host copies each message into the instance through cabi_realloc, where
// a component may not call the host; a collection started there reads the
// wall clock through WASI and the call traps ("cannot leave component
// instance"; the WASI adapter of this wasmtime release pauses only the
// monotonic clock). So the collector is switched off between calls, and on
// only while a handler runs: whatever garbage a call leaves is collected in
// the next call, inside the handler, where calling the host is allowed.
//
// The build (example-agents/go/build.sh) puts this package beside the
// generated bindings, as wit_component/agent.
package agent

import (
	"errors"
	"fmt"
	"runtime/debug"

	host "wit_component/agentserver_agent_host"
	types "wit_component/agentserver_agent_types"

	witTypes "go.bytecodealliance.org/pkg/wit/types"
)

// Message is one message delivered to the agent.
type Message struct {
	// Thread is the opaque id of the conversation the message belongs to.
	Thread string
	// Sender is an agent's registered name, or "user:NAME" for a client.
	Sender string
	// Tag is the payload's root tag (Clark notation when namespaced).
	Tag string
	// Payload is one element, in exclusive canonical form.
	Payload string
}

// Handler answers one message with zero or more XML payloads, sent on the
// same thread, or an error: one made by Malformed or Refused says so to the
// sender, any other is an internal failure.
type Handler func(msg Message) ([]string, error)

// Failure is an error that becomes the contract's failure of the same kind.
type Failure struct {
	kind   uint8
	reason string
}

func (f *Failure) Error() string { return f.reason }

// Malformed says the payload is not what this agent understands.
func Malformed(format string, args ...any) error {
	return &Failure{types.FailureMalformed, fmt.Sprintf(format, args...)}
}

// Refused says the agent declines.
func Refused(format string, args ...any) error {
	return &Failure{types.FailureRefused, fmt.Sprintf(format, args...)}
}

// gcPercent is the collector's setting while a handler runs (Go's default).
const gcPercent = 100

func init() {
	debug.SetGCPercent(-1)
}

// Serve runs handler on msg and returns what the generated export returns.
// A panic in the handler is an internal failure, not a trap, so the
// instance and its state are kept.
func Serve(msg types.Envelope, handler Handler) (result witTypes.Result[[]string, types.Failure]) {
	debug.SetGCPercent(gcPercent)
	defer debug.SetGCPercent(-1)
	defer func() {
		if panicked := recover(); panicked != nil {
			result = witTypes.Err[[]string](types.MakeFailureInternal(fmt.Sprintf("panic: %v", panicked)))
		}
	}()
	payloads, err := handler(Message{Thread: msg.Thread, Sender: msg.Sender, Tag: msg.Tag, Payload: msg.Payload})
	if err == nil {
		return witTypes.Ok[[]string, types.Failure](payloads)
	}
	var failure *Failure
	switch {
	case errors.As(err, &failure) && failure.kind == types.FailureMalformed:
		return witTypes.Err[[]string](types.MakeFailureMalformed(failure.reason))
	case errors.As(err, &failure) && failure.kind == types.FailureRefused:
		return witTypes.Err[[]string](types.MakeFailureRefused(failure.reason))
	default:
		return witTypes.Err[[]string](types.MakeFailureInternal(err.Error()))
	}
}

// Level is a log line's severity.
type Level = host.Level

// The log levels.
const (
	Trace = host.LevelTrace
	Debug = host.LevelDebug
	Info  = host.LevelInfo
	Warn  = host.LevelWarn
	Error = host.LevelError
)

// Log writes a structured log line, attributed by the host to this agent
// and the thread it is handling.
func Log(level Level, message string) {
	host.Log(level, message)
}

// Emit sends one XML payload on the current thread now, before the handler
// returns: for progress and streamed answers. It counts against the same
// per-call limits as the returned payloads.
func Emit(payload string) {
	host.Emit(payload)
}
