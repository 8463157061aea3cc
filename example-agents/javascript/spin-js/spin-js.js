// A hostile agent: its handler never returns. It exists to prove that fuel
// and wall-time limits stop an interpreter (SpiderMonkey, inside the
// component) stuck in a loop, and that nothing else is affected.

export function handle(_msg) {
  for (;;) {
    // Spin.
  }
}
