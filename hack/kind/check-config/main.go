// check-config reads a kind cluster configuration with kind's own v1alpha4 types, strictly (an
// unknown or misspelt field is an error, as `kind create cluster --config` would report), and
// checks what pyexec's kind path relies on. Run by `make kind-config-check` (no Docker needed).
package main

import (
	"fmt"
	"os"
	"strings"

	"sigs.k8s.io/kind/pkg/apis/config/v1alpha4"
	"sigs.k8s.io/yaml"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: check-config <kind-config.yaml>")
		os.Exit(2)
	}
	if err := check(os.Args[1]); err != nil {
		fmt.Fprintf(os.Stderr, "kind-config-check: %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func check(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var cluster v1alpha4.Cluster
	if err := yaml.UnmarshalStrict(data, &cluster); err != nil {
		return fmt.Errorf("not a kind v1alpha4 Cluster: %w", err)
	}
	if cluster.Kind != "Cluster" || cluster.APIVersion != "kind.x-k8s.io/v1alpha4" {
		return fmt.Errorf("kind %q apiVersion %q, expected Cluster kind.x-k8s.io/v1alpha4", cluster.Kind, cluster.APIVersion)
	}
	v1alpha4.SetDefaultsCluster(&cluster)
	if len(cluster.Nodes) != 1 || cluster.Nodes[0].Role != v1alpha4.ControlPlaneRole {
		return fmt.Errorf("expected one control-plane node, got %d nodes", len(cluster.Nodes))
	}
	if image := cluster.Nodes[0].Image; !strings.HasPrefix(image, "kindest/node:") || !strings.Contains(image, "@sha256:") {
		return fmt.Errorf("the node image %q is not a kindest/node image pinned by digest", image)
	}
	patches := strings.Join(cluster.ContainerdConfigPatches, "\n")
	for _, want := range []string{`runtimes.runsc]`, `runtime_type = "io.containerd.runsc.v1"`, `ConfigPath = "/etc/containerd/runsc.toml"`} {
		if !strings.Contains(patches, want) {
			return fmt.Errorf("no containerd patch with %q (the runsc runtime handler)", want)
		}
	}
	fmt.Printf("kind-config-check: %s is a valid kind v1alpha4 Cluster (node %s, runsc handler patched in)\n", path, cluster.Nodes[0].Image)
	return nil
}
