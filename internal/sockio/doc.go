// Package sockio reads and writes TCP sockets without telling the Go
// runtime that a system call is under way.
//
// The runtime wraps each ordinary system call in bookkeeping so that a
// call that blocks can give up its processor. One piece of it is costly
// for a tunnel: when a process has been idle, its first system call wakes
// the runtime's monitor thread (sysmon), which then naps and polls for a
// while. Each hop of a request through a tunnel starts a west from idle,
// so each paid for a futex wake, a nanosleep and two context switches on
// a machine whose other processes were waiting for that CPU. The net
// package's sockets never block (the runtime's poller waits for them), so
// their reads and writes may skip the bookkeeping: here they are raw
// system calls, tried once and, when the socket is not ready, left to the
// poller through syscall.RawConn as usual. Deadlines, Close and the rest
// of net.TCPConn behave as before.
//
// Measured on a 2-vCPU VM: a request through two plain Go relays took a
// median 200 µs with the net package's reads and writes and 160 µs with
// raw ones, against 150 µs through two relays written in C; through one
// tunnel hop (westbench, both ways in one run), 223 against 298 µs.
//
// The monitor's wake-up is not only a cost: while it naps, its CPU is not
// idle, and on this VM waking an idle CPU is slow. A ping-pong with a
// process that has a CPU to itself (BenchmarkEchoProcess) is faster with
// the net package's calls, and with both CPUs kept busy by other work it
// is not. WEST_SOCKIO=off in the environment turns this package off, to
// measure both ways on one machine.
//
// Outside Linux, Wrap and WrapListener return what they are given. Under
// the race detector the calls are ordinary ones (see race_linux.go).
//
// LimitHint, for an accept or a dial that failed, names the system limit
// that refused the socket, for the node, the far side and the tunnel
// client alike. ShedListener keeps a descriptor in reserve, so that a
// listener out of them turns clients away at once rather than leave them
// waiting unanswered (on Unix; elsewhere it does nothing).
package sockio
