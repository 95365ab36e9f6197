// A client-go program that talks to the sim in protobuf only, the way a vendor driver's typed
// clients do (ContentType protobuf) but with no JSON fallback for answers.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	resourcev1 "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
)

func must(err error, what string) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL %s: %v\n", what, err)
		os.Exit(1)
	}
}

func main() {
	cfg, err := clientcmd.BuildConfigFromFlags("", os.Args[1])
	must(err, "kubeconfig")
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf"
	cs, err := kubernetes.NewForConfig(cfg)
	must(err, "clientset")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	devices := 128
	if len(os.Args) > 2 {
		fmt.Sscanf(os.Args[2], "%d", &devices)
	}
	slices := cs.ResourceV1().ResourceSlices()
	w, err := slices.Watch(ctx, metav1.ListOptions{AllowWatchBookmarks: true, SendInitialEvents: ptr.To(true),
		ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan})
	must(err, "watch")
	mem := resource.MustParse("80Gi")
	slice := &resourcev1.ResourceSlice{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "node-1-gpu.example.com-"},
		Spec: resourcev1.ResourceSliceSpec{
			Driver: "gpu.example.com", NodeName: ptr.To("node-1"),
			Pool: resourcev1.ResourcePool{Name: "node-1", Generation: 1, ResourceSliceCount: 1},
		},
	}
	for i := 0; i < devices; i++ {
		slice.Spec.Devices = append(slice.Spec.Devices, resourcev1.Device{
			Name:                     fmt.Sprintf("gpu-%d", i),
			AllowMultipleAllocations: ptr.To(true),
			Attributes: map[resourcev1.QualifiedName]resourcev1.DeviceAttribute{
				"index": {IntValue: ptr.To(int64(i))}, "uuid": {StringValue: ptr.To(fmt.Sprintf("GPU-%d", i))},
				"driverVersion": {VersionValue: ptr.To("570.124.6")},
			},
			Capacity: map[resourcev1.QualifiedName]resourcev1.DeviceCapacity{"memory": {Value: mem,
				RequestPolicy: &resourcev1.CapacityRequestPolicy{Default: ptr.To(mem),
					ValidRange: &resourcev1.CapacityRequestPolicyRange{Min: ptr.To(resource.MustParse("1Gi")), Step: ptr.To(resource.MustParse("1Gi"))}}}},
		})
	}
	start := time.Now()
	created, err := slices.Create(ctx, slice, metav1.CreateOptions{})
	must(err, "create ResourceSlice")
	fmt.Printf("create ResourceSlice (%d devices): %v\n", devices, time.Since(start))
	if len(created.Spec.Devices) != devices || created.Spec.Devices[devices-1].Capacity["memory"].RequestPolicy.ValidRange.Step.String() != "1Gi" {
		must(fmt.Errorf("created slice differs: %+v", created.Spec.Devices[0]), "create answer")
	}
	got, err := slices.Get(ctx, created.Name, metav1.GetOptions{})
	must(err, "get")
	got.Labels = map[string]string{"tampered": "yes"}
	upd, err := slices.Update(ctx, got, metav1.UpdateOptions{})
	must(err, "update")
	if upd.Labels["tampered"] != "yes" {
		must(fmt.Errorf("labels %v", upd.Labels), "update answer")
	}
	list, err := slices.List(ctx, metav1.ListOptions{})
	must(err, "list")
	if len(list.Items) != 1 {
		must(fmt.Errorf("%d items", len(list.Items)), "list")
	}
	_, err = slices.Get(ctx, "missing", metav1.GetOptions{})
	if !apierrors.IsNotFound(err) {
		must(fmt.Errorf("want NotFound, got %v", err), "get missing")
	}
	events := cs.CoreV1().Events("default")
	ev, err := events.Create(ctx, &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "node-1.gpu"},
		InvolvedObject: corev1.ObjectReference{Kind: "Node", Name: "node-1", APIVersion: "v1"},
		Reason:         "Published", Message: "128 devices", Type: "Normal", Count: 1,
		FirstTimestamp: metav1.Now(), LastTimestamp: metav1.Now(),
		Source: corev1.EventSource{Component: "gpu-kubelet-plugin", Host: "node-1"}}, metav1.CreateOptions{})
	must(err, "create Event")
	_, err = events.Get(ctx, ev.Name, metav1.GetOptions{})
	must(err, "get Event")
	node, err := cs.CoreV1().Nodes().Get(ctx, "node-1", metav1.GetOptions{})
	must(err, "get Node")
	_ = node
	err = slices.Delete(ctx, created.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &created.UID}})
	must(err, "delete with preconditions")
	seen := map[watch.EventType]int{}
	initialEnd := false
	for ev := range w.ResultChan() {
		seen[ev.Type]++
		if ev.Type == watch.Bookmark {
			if s, ok := ev.Object.(*resourcev1.ResourceSlice); ok && s.Annotations["k8s.io/initial-events-end"] == "true" {
				initialEnd = true
			}
		}
		if ev.Type == watch.Error {
			must(apierrors.FromObject(ev.Object), "watch error event")
		}
		if seen[watch.Deleted] > 0 {
			break
		}
	}
	w.Stop()
	if !initialEnd || seen[watch.Added] != 1 || seen[watch.Modified] < 1 {
		must(fmt.Errorf("watch saw %v, initial-events-end bookmark %v", seen, initialEnd), "watch")
	}
	fmt.Printf("OK: protobuf-only client-go: create/get/update/list/delete ResourceSlice, Event, Node, NotFound Status, watch %v\n", seen)
}
