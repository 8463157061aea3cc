// Package wasihttp lets a Go agent use net/http for outbound requests: its
// Transport is an http.RoundTripper over wasi:http/outgoing-handler, the
// only way out of the sandbox (Go's own transport dials sockets, which
// wasip1 does not have: every dial is refused). The host lets a request
// through only to the hosts the owner granted, adds the secrets the grant
// names, and bounds sizes, counts and time; what it refuses comes back as an
// error naming the wasi:http error code, such as HTTP-request-denied.
//
//	client := &http.Client{Transport: wasihttp.Transport{}}
//	response, err := client.Get("https://api.example.com/v1/items")
//
// The agent must be built for a world that imports wasi:http (agent-http or
// agent-http-keyvalue); example-agents/go/build.sh then puts this package
// beside the generated bindings, as wit_component/wasihttp.
package wasihttp

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	handler "wit_component/wasi_http_outgoing_handler"
	types "wit_component/wasi_http_types"
	streams "wit_component/wasi_io_streams"

	witTypes "go.bytecodealliance.org/pkg/wit/types"
)

// Transport sends requests through the host. The zero value is ready to
// use; it keeps no connections of its own (the host does).
type Transport struct{}

// chunk is the most a body read or write moves at once.
const chunk = 64 * 1024

// RoundTrip sends one request and returns its response, whose body streams
// from the host as it is read. Close the body to release it. Its errors name
// what went wrong only (http.Client adds the method and URL).
func (Transport) RoundTrip(request *http.Request) (*http.Response, error) {
	if request.Body != nil {
		defer request.Body.Close()
	}
	outgoing, err := outgoingRequest(request)
	if err != nil {
		return nil, err
	}
	var body *types.OutgoingBody
	if request.Body != nil && request.Body != http.NoBody {
		taken := outgoing.Body()
		if taken.IsErr() {
			outgoing.Drop()
			return nil, errors.New("wasihttp: the request body was already taken")
		}
		body = taken.Ok()
	}
	sent := handler.Handle(outgoing, witTypes.None[*types.RequestOptions]())
	if sent.IsErr() {
		if body != nil {
			body.Drop()
		}
		return nil, errors.New(errorCode(sent.Err()))
	}
	future := sent.Ok()
	if body != nil {
		if err := writeBody(body, request.Body); err != nil {
			future.Drop()
			return nil, fmt.Errorf("sending the body: %w", err)
		}
	}
	incoming, err := await(future)
	if err != nil {
		return nil, err
	}
	return response(request, incoming)
}

// outgoingRequest is request as a wasi:http outgoing-request.
func outgoingRequest(request *http.Request) (*types.OutgoingRequest, error) {
	entries := make([]witTypes.Tuple2[string, []uint8], 0, len(request.Header))
	for name, values := range request.Header {
		for _, value := range values {
			entries = append(entries, witTypes.Tuple2[string, []uint8]{F0: strings.ToLower(name), F1: []byte(value)})
		}
	}
	fields := types.FieldsFromList(entries)
	if fields.IsErr() {
		return nil, fmt.Errorf("a header the host does not accept (%s)", headerError(fields.Err()))
	}
	outgoing := types.MakeOutgoingRequest(fields.Ok())
	var scheme types.Scheme
	switch request.URL.Scheme {
	case "http":
		scheme = types.MakeSchemeHttp()
	case "https":
		scheme = types.MakeSchemeHttps()
	default:
		outgoing.Drop()
		return nil, fmt.Errorf("unsupported scheme %q", request.URL.Scheme)
	}
	host := request.Host
	if host == "" {
		host = request.URL.Host
	}
	if outgoing.SetMethod(method(request.Method)).IsErr() ||
		outgoing.SetScheme(witTypes.Some(scheme)).IsErr() ||
		outgoing.SetAuthority(witTypes.Some(host)).IsErr() ||
		outgoing.SetPathWithQuery(witTypes.Some(request.URL.RequestURI())).IsErr() {
		outgoing.Drop()
		return nil, errors.New("not a request the host accepts")
	}
	return outgoing, nil
}

func method(name string) types.Method {
	switch name {
	case "", http.MethodGet:
		return types.MakeMethodGet()
	case http.MethodHead:
		return types.MakeMethodHead()
	case http.MethodPost:
		return types.MakeMethodPost()
	case http.MethodPut:
		return types.MakeMethodPut()
	case http.MethodDelete:
		return types.MakeMethodDelete()
	case http.MethodConnect:
		return types.MakeMethodConnect()
	case http.MethodOptions:
		return types.MakeMethodOptions()
	case http.MethodTrace:
		return types.MakeMethodTrace()
	case http.MethodPatch:
		return types.MakeMethodPatch()
	default:
		return types.MakeMethodOther(name)
	}
}

// writeBody streams from into body, then finishes it.
func writeBody(body *types.OutgoingBody, from io.Reader) error {
	opened := body.Write()
	if opened.IsErr() {
		body.Drop()
		return errors.New("the body stream was already taken")
	}
	stream := opened.Ok()
	buffer := make([]byte, chunk)
	for {
		n, readErr := from.Read(buffer)
		for written := 0; written < n; {
			// blocking-write-and-flush takes at most 4096 bytes a call.
			end := min(n, written+4096)
			if result := stream.BlockingWriteAndFlush(buffer[written:end]); result.IsErr() {
				stream.Drop()
				body.Drop()
				return errors.New(streamError(result.Err()))
			}
			written = end
		}
		if errors.Is(readErr, io.EOF) {
			break
		}
		if readErr != nil {
			stream.Drop()
			body.Drop()
			return readErr
		}
	}
	stream.Drop()
	if finished := types.OutgoingBodyFinish(body, witTypes.None[*types.Fields]()); finished.IsErr() {
		return errors.New(errorCode(finished.Err()))
	}
	return nil
}

// await waits for the response.
func await(future *types.FutureIncomingResponse) (*types.IncomingResponse, error) {
	defer future.Drop()
	ready := future.Subscribe()
	ready.Block()
	ready.Drop()
	got := future.Get()
	if got.IsNone() || got.Some().IsErr() {
		return nil, errors.New("the response was not ready, or was taken twice")
	}
	result := got.Some().Ok()
	if result.IsErr() {
		return nil, errors.New(errorCode(result.Err()))
	}
	return result.Ok(), nil
}

// response is incoming as an http.Response whose body reads from the host.
func response(request *http.Request, incoming *types.IncomingResponse) (*http.Response, error) {
	headers := incoming.Headers()
	header := make(http.Header)
	for _, entry := range headers.Entries() {
		header.Add(entry.F0, string(entry.F1))
	}
	headers.Drop()
	consumed := incoming.Consume()
	if consumed.IsErr() {
		incoming.Drop()
		return nil, errors.New("the response body was already taken")
	}
	body := consumed.Ok()
	opened := body.Stream()
	if opened.IsErr() {
		body.Drop()
		incoming.Drop()
		return nil, errors.New("the response body stream was already taken")
	}
	status := int(incoming.Status())
	return &http.Response{
		Status:        fmt.Sprintf("%d %s", status, http.StatusText(status)),
		StatusCode:    status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        header,
		Body:          &responseBody{stream: opened.Ok(), body: body, response: incoming},
		ContentLength: -1,
		Request:       request,
	}, nil
}

// responseBody reads a response's body from the host. Its resources are
// dropped children first: the stream, the body, then the response.
type responseBody struct {
	stream   *streams.InputStream
	body     *types.IncomingBody
	response *types.IncomingResponse
	err      error
}

func (b *responseBody) Read(into []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if len(into) == 0 {
		return 0, nil
	}
	read := b.stream.BlockingRead(uint64(min(len(into), chunk)))
	if read.IsErr() {
		failure := read.Err()
		if failure.Tag() == streams.StreamErrorClosed {
			b.err = io.EOF
		} else {
			b.err = errors.New(streamError(failure))
		}
		return 0, b.err
	}
	return copy(into, read.Ok()), nil
}

func (b *responseBody) Close() error {
	if b.stream != nil {
		b.stream.Drop()
		b.stream = nil
		types.IncomingBodyFinish(b.body).Drop()
		b.response.Drop()
	}
	if b.err == nil {
		b.err = errors.New("wasihttp: read from a closed body")
	}
	return nil
}

func streamError(failure streams.StreamError) string {
	if failure.Tag() == streams.StreamErrorClosed {
		return "the stream was closed"
	}
	failed := failure.LastOperationFailed()
	defer failed.Drop()
	if code := types.HttpErrorCode(failed); code.IsSome() {
		return errorCode(code.Some())
	}
	return failed.ToDebugString()
}

func headerError(failure types.HeaderError) string {
	switch failure.Tag() {
	case types.HeaderErrorInvalidSyntax:
		return "invalid-syntax"
	case types.HeaderErrorForbidden:
		return "forbidden"
	default:
		return "immutable"
	}
}

// errorCodes are the names of wasi:http's error-code cases, by tag.
var errorCodes = [...]string{
	"DNS-timeout", "DNS-error", "destination-not-found", "destination-unavailable",
	"destination-IP-prohibited", "destination-IP-unroutable", "connection-refused",
	"connection-terminated", "connection-timeout", "connection-read-timeout",
	"connection-write-timeout", "connection-limit-reached", "TLS-protocol-error",
	"TLS-certificate-error", "TLS-alert-received", "HTTP-request-denied",
	"HTTP-request-length-required", "HTTP-request-body-size", "HTTP-request-method-invalid",
	"HTTP-request-URI-invalid", "HTTP-request-URI-too-long", "HTTP-request-header-section-size",
	"HTTP-request-header-size", "HTTP-request-trailer-section-size", "HTTP-request-trailer-size",
	"HTTP-response-incomplete", "HTTP-response-header-section-size", "HTTP-response-header-size",
	"HTTP-response-body-size", "HTTP-response-trailer-section-size", "HTTP-response-trailer-size",
	"HTTP-response-transfer-coding", "HTTP-response-content-coding", "HTTP-response-timeout",
	"HTTP-upgrade-failed", "HTTP-protocol-error", "loop-detected", "configuration-error",
	"internal-error",
}

// errorCode names a wasi:http error code, with the host's text when it
// gives one.
func errorCode(code types.ErrorCode) string {
	name := fmt.Sprintf("error code %d", code.Tag())
	if int(code.Tag()) < len(errorCodes) {
		name = errorCodes[code.Tag()]
	}
	switch code.Tag() {
	case types.ErrorCodeInternalError:
		if detail := code.InternalError(); detail.IsSome() {
			return name + ": " + detail.Some()
		}
	case types.ErrorCodeHttpResponseBodySize:
		if limit := code.HttpResponseBodySize(); limit.IsSome() {
			return fmt.Sprintf("%s (limit %d bytes)", name, limit.Some())
		}
	case types.ErrorCodeDnsError:
		if rcode := code.DnsError().Rcode; rcode.IsSome() {
			return name + ": " + rcode.Some()
		}
	}
	return name
}
