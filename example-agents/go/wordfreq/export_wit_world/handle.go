// Package export_wit_world is the wordfreq agent's side of the contract:
// the generated bindings call Handle for each message. Listens to two tags:
//
//	<wordfreq top="3">the cat and the hat</wordfreq>
//	    the words of this text, most frequent first, and adds them to the
//	    session's tally;
//	<wordfreq-total top="3"/>
//	    the session's tally over every <wordfreq> so far.
//
// Each session has its own instance of the component, so the package-level
// tally is the session's.
package export_wit_world

import (
	"wit_component/agent"
	types "wit_component/agentserver_agent_types"
	"wit_component/wordfreq"

	witTypes "go.bytecodealliance.org/pkg/wit/types"
)

// session counts every <wordfreq> text of this session.
var session = wordfreq.NewTally()

// Handle is the world's export.
func Handle(msg types.Envelope) witTypes.Result[[]string, types.Failure] {
	return agent.Serve(msg, handle)
}

func handle(msg agent.Message) ([]string, error) {
	switch msg.Tag {
	case "wordfreq", "wordfreq-total":
	default:
		return nil, agent.Malformed("wordfreq listens to <wordfreq> and <wordfreq-total>, not <%s>", msg.Tag)
	}
	request, err := wordfreq.Parse(msg.Payload, msg.Tag)
	if err != nil {
		return nil, agent.Malformed("%v", err)
	}
	if request.Tag == "wordfreq-total" {
		return []string{session.Render(request.Top, true)}, nil
	}
	text := wordfreq.NewTally()
	text.Add(request.Text)
	session.Merge(text)
	return []string{text.Render(request.Top, false)}, nil
}
