package sockio

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/west-tunnel/west/internal/testutil"
)

// echoEnv makes the test binary an echo server in a process of its own,
// reading and writing as its value says: "net" or "sockio".
const echoEnv = "SOCKIO_TEST_ECHO"

// TestMain fails the package's tests if they leave goroutines running.
func TestMain(m *testing.M) {
	if mode := os.Getenv(echoEnv); mode != "" {
		if err := echoOnce(mode); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	testutil.VerifyTestMain(m)
}

// echoOnce prints its address, then echoes one connection until its end.
func echoOnce(mode string) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Println(ln.Addr())
	c, err := ln.Accept()
	ln.Close()
	if err != nil {
		return err
	}
	if mode == "sockio" {
		c = Wrap(c)
	}
	buf := make([]byte, 64<<10)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return nil
		}
		if _, err := c.Write(buf[:n]); err != nil {
			return err
		}
	}
}

// startEcho runs echoOnce in a child process and dials it.
func startEcho(t testing.TB, mode string) net.Conn {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), echoEnv+"="+mode)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("echo process: %v", err)
	}
	c, err := net.Dial("tcp", strings.TrimSpace(addr))
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		io.Copy(io.Discard, out)
		cmd.Wait()
	})
	return c
}
