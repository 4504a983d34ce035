package engine

import (
	"fmt"
	"sort"
	"strconv"
)

// Admission is what the worker knows about an offer before accepting it.
type Admission struct {
	Kind   TaskKind
	Engine EngineName // modelSource.engine
	Model  string
	VRAMGB float64 // the studio's vramGbEstimate
	// Files are the offer's modelSource.files, for the models folder's
	// disk budget (Store.CheckRoom); nil skips that check.
	Files []ModelFile
}

// OverBudgetError: the job's estimate is more than the donor lets the
// studio use.
type OverBudgetError struct {
	NeedGB, BudgetGB float64
}

func (e *OverBudgetError) Error() string {
	return fmt.Sprintf("this job needs %s GB, your budget is %s GB", fmtGB(e.NeedGB), fmtGB(e.BudgetGB))
}

// NotEnoughVRAMError: the job fits the budget, but the GPU does not have the
// memory free right now, even counting what our own resident models would
// give back.
type NotEnoughVRAMError struct {
	NeedGB, FreeGB float64
}

func (e *NotEnoughVRAMError) Error() string {
	return fmt.Sprintf("this job needs %s GB, only %s GB of GPU memory is free", fmtGB(e.NeedGB), fmtGB(e.FreeGB))
}

func fmtGB(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }

// gbSlack absorbs rounding between the studio's GB figures and ours, so that
// a 12.0 GB job is not refused by a 12 GB budget over a last bit.
const gbSlack = 1e-6

// checkBudget applies the donor's budget to an estimate.
func checkBudget(needGB, budgetGB float64) error {
	if needGB > budgetGB+gbSlack {
		return &OverBudgetError{NeedGB: needGB, BudgetGB: budgetGB}
	}
	return nil
}

// usableFree is the GPU memory a job of this kind could use: image engines
// run on one device, llama.cpp can split layers over all of them.
func usableFree(v VRAMInfo, kind TaskKind) uint64 {
	if kind == KindLLM {
		return v.FreeBytes
	}
	return v.LargestFree()
}

// checkFree compares an estimate with free memory plus what releasing our
// own resident models would give back.
func checkFree(needGB float64, free, giveBack uint64) error {
	avail := free + giveBack
	if gbToBytes(needGB) > avail+gbToBytes(gbSlack) {
		return &NotEnoughVRAMError{NeedGB: needGB, FreeGB: bytesToGB(avail)}
	}
	return nil
}

// evictionPlan picks resident engines to release, largest first, until the
// job fits both the budget (need + what stays resident <= budget) and, when
// known, the free memory (need <= free + what was released + keepGiveBack).
// keepGiveBack is memory the chosen engine itself frees when it swaps
// models. It returns the engines to release, in order.
func evictionPlan(needGB, budgetGB float64, others []Engine, vramKnown bool, free, keepGiveBack uint64) []Engine {
	type res struct {
		e Engine
		b uint64
	}
	var list []res
	var resident uint64
	for _, e := range others {
		if b := e.ResidentVRAMBytes(); b > 0 {
			list = append(list, res{e, b})
			resident += b
		}
	}
	sort.SliceStable(list, func(i, j int) bool { return list[i].b > list[j].b })
	need := gbToBytes(needGB)
	budget := gbToBytes(budgetGB + gbSlack)
	freed := uint64(0)
	fits := func() bool {
		if need+resident > budget {
			return false
		}
		return !vramKnown || need <= free+freed+keepGiveBack
	}
	var out []Engine
	for _, r := range list {
		if fits() {
			break
		}
		out = append(out, r.e)
		resident -= r.b
		freed += r.b
	}
	return out
}
