// Command celshim is a c-shared library that exposes upstream's DRA CEL environment
// (k8s.io/dynamic-resource-allocation/cel on cel-go and k8s.io/apiserver's libraries) to the sim
// through a handful of C functions, so that the sim compiles and evaluates device selectors with
// exactly the code, messages and cost model a real cluster uses. sim/cel.py is the only caller.
package main

/*
#include <stdint.h>
#include <stdlib.h>
*/
import "C"

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"unsafe"

	resourceapi "k8s.io/api/resource/v1"
	apiservercel "k8s.io/apiserver/pkg/cel"
	"k8s.io/apiserver/pkg/cel/environment"
	dracel "k8s.io/dynamic-resource-allocation/cel"
)

var (
	nextHandle atomic.Int64
	programs   sync.Map // int64 -> dracel.CompilationResult
	devices    sync.Map // int64 -> dracel.Device
)

const (
	featureConsumableCapacity = 1 << 0
	featureListTypeAttributes = 1 << 1
	flagNewExpressions        = 1 << 2 // validation of a new object (apiserver); else stored (allocator)
	flagEstimateCost          = 1 << 3
)

func cString(s string) *C.char { return C.CString(s) }

// recoverInto turns a panic in upstream code into an error text, so that one bad selector or device
// never takes the sim's process down.
func recoverInto(errOut **C.char, fail func()) {
	if r := recover(); r != nil {
		*errOut = cString(fmt.Sprintf("internal error: %v", r))
		fail()
	}
}

// dra_cel_compile compiles a selector with upstream's compiler, as the allocator does (stored
// expressions) or as API validation does (flagNewExpressions, with flagEstimateCost). costLimit is
// the runtime cost budget of the program. It returns a program handle (> 0), or 0 with the error
// text in *errOut (freed with dra_cel_free_string) and its apiservercel.ErrorType in *errType.
// *maxCost gets the compile-time worst-case cost estimate (math.MaxUint64 when not estimated).
//
//export dra_cel_compile
func dra_cel_compile(expr *C.char, exprLen C.int, flags C.int, costLimit C.uint64_t, errOut **C.char, errType *C.int, maxCost *C.uint64_t) (handle C.int64_t) {
	defer recoverInto(errOut, func() { handle, *errType = 0, 2 })
	f := int(flags)
	features := dracel.Features{
		EnableConsumableCapacity: f&featureConsumableCapacity != 0,
		EnableListTypeAttributes: f&featureListTypeAttributes != 0,
	}
	envType := environment.StoredExpressions
	if f&flagNewExpressions != 0 {
		envType = environment.NewExpressions
	}
	limit := uint64(costLimit)
	opts := dracel.Options{EnvType: &envType, CostLimit: &limit, DisableCostEstimation: f&flagEstimateCost == 0}
	result := dracel.GetCompiler(features).CompileCELExpression(C.GoStringN(expr, exprLen), opts)
	*maxCost = C.uint64_t(result.MaxCost)
	if result.Error != nil {
		*errOut = cString(result.Error.Error())
		*errType = C.int(errorTypeCode(result.Error.Type))
		return 0
	}
	h := nextHandle.Add(1)
	programs.Store(h, result)
	return C.int64_t(h)
}

// errorTypeCode maps apiservercel.ErrorType to the numbers sim/cel.py knows.
func errorTypeCode(t apiservercel.ErrorType) int {
	switch t {
	case apiservercel.ErrorTypeInvalid:
		return 1
	case apiservercel.ErrorTypeRequired:
		return 3
	default:
		return 2
	}
}

// deviceJSON is the part of a resource.k8s.io/v1 Device that selectors see, plus the driver.
type deviceJSON struct {
	Driver                   string                                                    `json:"driver"`
	AllowMultipleAllocations *bool                                                     `json:"allowMultipleAllocations"`
	Attributes               map[resourceapi.QualifiedName]resourceapi.DeviceAttribute `json:"attributes"`
	Capacity                 map[resourceapi.QualifiedName]resourceapi.DeviceCapacity  `json:"capacity"`
}

// dra_cel_device decodes one device (JSON) into the form DeviceMatches takes, once, so that each
// evaluation only pays for the evaluation. Returns a handle or 0 and an error text.
//
//export dra_cel_device
func dra_cel_device(data *C.char, dataLen C.int, errOut **C.char) (handle C.int64_t) {
	defer recoverInto(errOut, func() { handle = 0 })
	var d deviceJSON
	if err := json.Unmarshal(C.GoBytes(unsafe.Pointer(data), dataLen), &d); err != nil {
		*errOut = cString(err.Error())
		return 0
	}
	h := nextHandle.Add(1)
	devices.Store(h, dracel.Device{
		Driver:                   d.Driver,
		AllowMultipleAllocations: d.AllowMultipleAllocations,
		Attributes:               d.Attributes,
		Capacity:                 d.Capacity,
	})
	return C.int64_t(h)
}

// dra_cel_match evaluates a program against a device: 1 matches, 0 does not, -1 error (text in
// *errOut, with upstream's hint for missing keys). *actualCost gets the cost the evaluation used.
//
//export dra_cel_match
func dra_cel_match(program, device C.int64_t, errOut **C.char, actualCost *C.uint64_t) (result C.int) {
	defer recoverInto(errOut, func() { result = -1 })
	p, ok := programs.Load(int64(program))
	if !ok {
		*errOut = cString("internal error: unknown CEL program handle")
		return -1
	}
	d, ok := devices.Load(int64(device))
	if !ok {
		*errOut = cString("internal error: unknown CEL device handle")
		return -1
	}
	matches, details, err := p.(dracel.CompilationResult).DeviceMatches(context.Background(), d.(dracel.Device))
	*actualCost = C.uint64_t(math.MaxUint64)
	if details != nil && details.ActualCost() != nil {
		*actualCost = C.uint64_t(*details.ActualCost())
	}
	if err != nil {
		*errOut = cString(dracel.EnhanceRuntimeError(err).Error())
		return -1
	}
	if matches {
		return 1
	}
	return 0
}

//export dra_cel_release
func dra_cel_release(handle C.int64_t) {
	programs.Delete(int64(handle))
	devices.Delete(int64(handle))
}

//export dra_cel_free_string
func dra_cel_free_string(s *C.char) { C.free(unsafe.Pointer(s)) }

func main() {}
