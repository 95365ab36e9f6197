// Command upstream_allocator runs upstream's structured allocator
// (k8s.io/dynamic-resource-allocation/structured) on scenarios read as JSON lines from stdin and
// writes one JSON line per scenario: the outcome, the results, and the median time of one
// NewAllocator+Allocate call. Used by benchmarks/bench_allocator_upstream.py only.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"time"

	v1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/dynamic-resource-allocation/cel"
	"k8s.io/dynamic-resource-allocation/structured"
)

type scenario struct {
	Node     v1.Node                      `json:"node"`
	Classes  []*resourceapi.DeviceClass   `json:"classes"`
	Slices   []*resourceapi.ResourceSlice `json:"slices"`
	Existing []*resourceapi.ResourceClaim `json:"existing"`
	Claims   []*resourceapi.ResourceClaim `json:"claims"`
	Features map[string]bool              `json:"features"`
	Repeat   int                          `json:"repeat"`
	// Nodes, when set, makes one Filter pass: the state and the allocator are built once and the
	// claims are tried on every node; the outcome says on how many they fit.
	Nodes []v1.Node `json:"nodes"`
}

type output struct {
	Outcome      string                         `json:"outcome"`
	Error        string                         `json:"error,omitempty"`
	FailedOnNode bool                           `json:"failedOnNode,omitempty"`
	Results      []resourceapi.AllocationResult `json:"results,omitempty"`
	Nanos        int64                          `json:"nanos"`
}

type lister map[string]*resourceapi.DeviceClass

func (l lister) List() ([]*resourceapi.DeviceClass, error) {
	out := make([]*resourceapi.DeviceClass, 0, len(l))
	for _, c := range l {
		out = append(out, c)
	}
	return out, nil
}

func (l lister) Get(name string) (*resourceapi.DeviceClass, error) {
	if c, ok := l[name]; ok {
		return c, nil
	}
	return nil, apierrors.NewNotFound(resourceapi.Resource("deviceclass"), name)
}

// state gathers what the scheduler's GatherAllocatedState does from allocated claims.
func state(claims []*resourceapi.ResourceClaim, consumable bool) structured.AllocatedState {
	st := structured.AllocatedState{
		AllocatedDevices:         sets.New[structured.DeviceID](),
		AllocatedSharedDeviceIDs: sets.New[structured.SharedDeviceID](),
		AggregatedCapacity:       structured.NewConsumedCapacityCollection(),
	}
	for _, c := range claims {
		if c.Status.Allocation == nil {
			continue
		}
		for _, r := range c.Status.Allocation.Devices.Results {
			if r.AdminAccess != nil && *r.AdminAccess {
				continue
			}
			id := structured.MakeDeviceID(r.Driver, r.Pool, r.Device)
			if consumable && r.ShareID != nil {
				st.AllocatedSharedDeviceIDs.Insert(structured.MakeSharedDeviceID(id, r.ShareID))
				if r.ConsumedCapacity != nil {
					st.AggregatedCapacity.Insert(structured.NewDeviceConsumedCapacity(id, r.ConsumedCapacity))
				}
				continue
			}
			st.AllocatedDevices.Insert(id)
		}
	}
	return st
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<26)
	out := json.NewEncoder(os.Stdout)
	caches := map[bool]*cel.Cache{}
	for in.Scan() {
		var sc scenario
		if err := json.Unmarshal(in.Bytes(), &sc); err != nil {
			fmt.Fprintln(os.Stderr, "bad scenario:", err)
			os.Exit(2)
		}
		f := structured.Features{
			AdminAccess:          sc.Features["DRAAdminAccess"],
			ConsumableCapacity:   sc.Features["DRAConsumableCapacity"],
			PartitionableDevices: sc.Features["DRAPartitionableDevices"],
			PrioritizedList:      sc.Features["DRAPrioritizedList"],
		}
		cache := caches[f.ConsumableCapacity]
		if cache == nil {
			cache = cel.NewCache(1000, cel.Features{EnableConsumableCapacity: f.ConsumableCapacity})
			caches[f.ConsumableCapacity] = cache
		}
		classes := lister{}
		for _, c := range sc.Classes {
			classes[c.Name] = c
		}
		repeat := max(sc.Repeat, 1)
		var res output
		times := make([]int64, 0, repeat)
		for i := 0; i < repeat; i++ {
			start := time.Now()
			st := state(sc.Existing, f.ConsumableCapacity)
			a, err := structured.NewAllocator(context.Background(), f, st, classes, sc.Slices, cache)
			var results []resourceapi.AllocationResult
			if err == nil && len(sc.Nodes) > 0 {
				fits := 0
				for n := range sc.Nodes {
					r, err := a.Allocate(context.Background(), &sc.Nodes[n], sc.Claims)
					if err == nil && r != nil {
						fits++
					}
				}
				times = append(times, time.Since(start).Nanoseconds())
				res = output{Outcome: fmt.Sprintf("fits on %d nodes", fits)}
				continue
			}
			if err == nil {
				results, err = a.Allocate(context.Background(), &sc.Node, sc.Claims)
			}
			times = append(times, time.Since(start).Nanoseconds())
			res = output{}
			switch {
			case err != nil:
				res.Outcome, res.Error = "error", err.Error()
				res.FailedOnNode = errors.Is(err, structured.ErrFailedAllocationOnNode)
			case results == nil:
				res.Outcome = "unschedulable"
			default:
				res.Outcome, res.Results = "allocated", results
			}
		}
		sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
		res.Nanos = times[len(times)/2]
		if err := out.Encode(res); err != nil {
			os.Exit(3)
		}
	}
}
