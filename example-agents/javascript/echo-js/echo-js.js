// The smallest JavaScript agent: answers `<echoed>` with the content of
// what it is sent. The benchmarks use it to measure what a JavaScript agent
// costs (instantiation, a call, memory per instance) apart from any work.

export function handle(msg) {
  const payload = msg.payload;
  const content = payload.slice(payload.indexOf('>') + 1, payload.lastIndexOf('<'));
  return [`<echoed>${content}</echoed>`];
}
