// The fetch-go agent. The module is named wit_component because the
// bindings that example-agents/go/build.sh generates beside this code
// import each other by that path; the build writes its own go.mod.
module wit_component

go 1.25
