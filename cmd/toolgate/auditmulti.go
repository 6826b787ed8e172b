package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/toolgate/toolgate/ledger"
)

// exportReport is one export's verification in a multi-export verify.
type exportReport struct {
	ledger.Report
	File string `json:"file"`
}

// verifyExports checks several exports at once, one per cluster node:
// each against its own chain and its own public key (pubkeys[i] for
// files[i]), and each holding records of one node only (the node its
// records name, hashed). It prints {"ok":…,"nodes":{node: report}} with
// ok only when every export verified, and exits 1 otherwise. An export
// whose records name no node (single-node mode) is listed under its file
// name.
func verifyExports(w io.Writer, files, pubkeys []string) error {
	if len(pubkeys) != len(files) {
		return exitError{2, fmt.Sprintf("audit verify: %d exports need %d --pubkey (each node signs with its own key), got %d",
			len(files), len(files), len(pubkeys))}
	}
	nodes := map[string]exportReport{}
	allOK := true
	for i, file := range files {
		pub, err := checkpointKey(pubkeys[i], apiClient{})
		if err != nil {
			return exitError{2, fmt.Sprintf("audit verify: --pubkey %d: %v", i+1, err)}
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		rep := ledger.VerifyExport(bytes.NewReader(b), pub)
		names := exportNodes(b)
		label := filepath.Base(file)
		switch {
		case len(names) == 1 && names[0] != "":
			label = names[0]
		case len(names) > 1:
			rep.OK = false
			rep.Reason = "records of several nodes in one export: " + strings.Join(names, ", ")
		}
		if _, dup := nodes[label]; dup {
			label += " (" + file + ")"
		}
		nodes[label] = exportReport{rep, file}
		allOK = allOK && rep.OK
	}
	out, _ := json.Marshal(map[string]any{"ok": allOK, "nodes": nodes})
	fmt.Fprintln(w, string(out))
	if !allOK {
		return exitError{1, ""}
	}
	return nil
}

// exportNodes lists the nodes an export's records name, sorted ("" for
// records naming none).
func exportNodes(b []byte) []string {
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.HasPrefix(line, []byte(`{"seq":`)) {
			continue
		}
		var r struct {
			Node string `json:"node"`
		}
		json.Unmarshal(line, &r)
		seen[r.Node] = true
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
