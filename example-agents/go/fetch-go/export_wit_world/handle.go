// Package export_wit_world is the fetch-go agent: net/http in a sandbox.
// `<fetch-go url="https://…"/>` GETs the URL with Go's http.Client over the
// host's outbound HTTP (guest-sdk/go/wasihttp), as far as the owner's grant
// allows, and answers `<fetched status="200" bytes="N">body</fetched>`, or
// `<fetch-failed url="…">why</fetch-failed>` when the host refuses or the
// request fails. Built for the world agent-http (the file wit-world).
package export_wit_world

import (
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"strings"

	"wit_component/agent"
	types "wit_component/agentserver_agent_types"
	"wit_component/wasihttp"

	witTypes "go.bytecodealliance.org/pkg/wit/types"
)

var client = &http.Client{Transport: wasihttp.Transport{}}

// Handle is the world's export.
func Handle(msg types.Envelope) witTypes.Result[[]string, types.Failure] {
	return agent.Serve(msg, fetch)
}

func fetch(msg agent.Message) ([]string, error) {
	var request struct {
		XMLName xml.Name
		URL     string `xml:"url,attr"`
	}
	if err := xml.Unmarshal([]byte(msg.Payload), &request); err != nil || request.XMLName.Local != "fetch-go" {
		return nil, agent.Malformed("expected <fetch-go url=\"…\"/>")
	}
	if request.URL == "" {
		return nil, agent.Malformed("<fetch-go> needs a url attribute")
	}
	response, err := client.Get(request.URL)
	if err != nil {
		return []string{fmt.Sprintf(`<fetch-failed url="%s">%s</fetch-failed>`, escapeAttribute(request.URL), escapeText(err.Error()))}, nil
	}
	defer response.Body.Close()
	body, err := io.ReadAll(response.Body)
	if err != nil {
		return []string{fmt.Sprintf(`<fetch-failed url="%s">%s</fetch-failed>`, escapeAttribute(request.URL), escapeText(err.Error()))}, nil
	}
	return []string{fmt.Sprintf(`<fetched bytes="%d" status="%d">%s</fetched>`, len(body), response.StatusCode, escapeText(string(body)))}, nil
}

var textEscapes = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", "\r", "&#xD;")
var attributeEscapes = strings.NewReplacer("&", "&amp;", "<", "&lt;", "\"", "&quot;", "\t", "&#x9;", "\n", "&#xA;", "\r", "&#xD;")

func escapeText(text string) string       { return textEscapes.Replace(text) }
func escapeAttribute(value string) string { return attributeEscapes.Replace(value) }
