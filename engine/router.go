package engine

import (
	"fmt"
	"slices"
	"sort"
)

// Router picks the engine named by modelSource.engine, strictly: a job whose
// engine is unknown, not loaded or unable to run its kind gets a
// *CannotServeError and is never handed to another engine (protocol §5.2:
// a fallback once uploaded placeholder bytes as real assets).
type Router struct {
	engines map[EngineName]Engine
	order   []EngineName
}

// NewRouter holds the given engines by name; a later engine of the same
// name replaces an earlier one.
func NewRouter(engines ...Engine) *Router {
	r := &Router{engines: map[EngineName]Engine{}}
	for _, e := range engines {
		if e == nil {
			continue
		}
		if _, dup := r.engines[e.Name()]; !dup {
			r.order = append(r.order, e.Name())
		}
		r.engines[e.Name()] = e
	}
	return r
}

// Engines returns the engines in the order they were given.
func (r *Router) Engines() []Engine {
	out := make([]Engine, 0, len(r.order))
	for _, n := range r.order {
		out = append(out, r.engines[n])
	}
	return out
}

// Engine returns the engine of that name, loaded or not.
func (r *Router) Engine(name EngineName) (Engine, bool) {
	e, ok := r.engines[name]
	return e, ok
}

// Route returns the engine that must run a job of this kind from this
// source, or a *CannotServeError saying in words why none can.
func (r *Router) Route(engine EngineName, kind TaskKind) (Engine, error) {
	if engine == "" {
		return nil, &CannotServeError{Engine: "unnamed", Kind: kind, Reason: "the offer's modelSource names no engine"}
	}
	e, ok := r.engines[engine]
	if !ok {
		return nil, &CannotServeError{Engine: string(engine), Kind: kind,
			Reason: fmt.Sprintf("no %s engine is available on this worker", engine)}
	}
	kinds := e.Kinds()
	if len(kinds) == 0 {
		return nil, &CannotServeError{Engine: string(engine), Kind: kind,
			Reason: fmt.Sprintf("the %s engine is not loaded on this worker (its native library is missing)", engine)}
	}
	if !slices.Contains(kinds, kind) {
		return nil, &CannotServeError{Engine: string(engine), Kind: kind}
	}
	return e, nil
}

// Kinds lists every kind some loaded engine can run, in the protocol's order.
func (r *Router) Kinds() []TaskKind {
	have := map[TaskKind]bool{}
	for _, e := range r.engines {
		for _, k := range e.Kinds() {
			have[k] = true
		}
	}
	var out []TaskKind
	for _, k := range AllKinds {
		if have[k] {
			out = append(out, k)
		}
	}
	return out
}

// SupportedModels is the per-kind list the worker advertises: "<engine>:*"
// for each loaded engine and kind, and for llm also the local GGUF models
// named by localLLM. Only kinds that some engine can run appear.
func (r *Router) SupportedModels(localLLM []string) map[TaskKind][]string {
	out := map[TaskKind][]string{}
	for _, name := range r.order {
		for _, k := range r.engines[name].Kinds() {
			out[k] = append(out[k], string(name)+":*")
			if k == KindLLM && name == EngineLlamaCpp {
				out[k] = append(out[k], localLLM...)
			}
		}
	}
	for k, v := range out {
		sort.Strings(v)
		out[k] = compactStrings(v)
	}
	return out
}
