package node

import (
	"testing"

	"github.com/west-tunnel/west/internal/testutil"
)

// TestMain fails the package's tests if they leave goroutines running.
func TestMain(m *testing.M) { testutil.VerifyTestMain(m) }
