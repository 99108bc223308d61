package config

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata's .golden files from the current output")

// TestGolden parses every testdata/*.json and testdata/seed/*.json and
// compares Render's output, or the error text, with the .golden file
// beside it. Run with -update to rewrite them, then review the diff.
func TestGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	seed, err := filepath.Glob(filepath.Join("testdata", "seed", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, seed...)
	if len(files) < 10 {
		t.Fatalf("found only %d inputs in testdata", len(files))
	}
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var got string
			c, err := Parse(data)
			switch {
			case err != nil:
				got = err.Error() + "\n"
			default:
				got = c.Render()
			}
			if isErr := strings.HasPrefix(filepath.Base(f), "err-"); isErr != (err != nil) {
				t.Errorf("error %v; files named err-* must fail and only they", err)
			}
			golden := strings.TrimSuffix(f, ".json") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("output differs from %s (run go test -update to accept it):\n--- got\n%s--- want\n%s", golden, got, want)
			}
		})
	}
}
