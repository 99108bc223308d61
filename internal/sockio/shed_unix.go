//go:build unix

package sockio

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// ShedListener returns ln holding one file descriptor in reserve, so
// that a process out of descriptors turns its clients away at once rather
// than leave them in the listen backlog, unanswered, for as long as it
// stays out: accept(2) fails with EMFILE or ENFILE for as long as that
// lasts, and the servers behind the listener only wait and try again.
// When Accept fails so, the listener frees its spare descriptor, accepts
// on it each client waiting, writes what answer returns to it (nothing,
// if answer is nil or returns nothing) and closes it, reserves the spare
// again, and returns a *ShedError. Answer is called for each client, so
// that what it says may change with the listener's configuration.
//
// It costs a descriptor per listener. A listener that is not a socket
// (a test's) is returned as it is.
func ShedListener(ln net.Listener, answer func() []byte) net.Listener {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return ln
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return ln
	}
	l := &shedListener{Listener: ln, raw: raw, answer: answer, spare: -1}
	l.reserve()
	return l
}

type shedListener struct {
	net.Listener
	raw    syscall.RawConn
	answer func() []byte // nil for none
	// lost says the spare could not be reserved again: another part of
	// the process took the descriptor first, or a limit lowered below
	// the descriptors open leaves none. The next Accept reserves it,
	// if it can.
	lost atomic.Bool

	mu     sync.Mutex // guards the fields below
	spare  int        // the reserved descriptor, -1 for none
	closed bool
}

// maxShed bounds the clients turned away at once, so that a flood of them
// does not hold the accept loop.
const maxShed = 128

func (l *shedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		if l.lost.Load() {
			l.reserve()
		}
		return c, nil
	}
	if !errors.Is(err, syscall.EMFILE) && !errors.Is(err, syscall.ENFILE) {
		return nil, err
	}
	if n := l.shed(); n > 0 {
		return nil, &ShedError{Err: err, Clients: n}
	}
	return nil, err
}

// shed turns away, on the spare descriptor, the clients waiting to be
// accepted, and returns how many.
func (l *shedListener) shed() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	// Lost, the spare may be had again: another listener's accept(2)
	// takes a descriptor even to find no client waiting.
	l.reserveLocked()
	if l.spare < 0 {
		return 0
	}
	n := 0
	l.raw.Control(func(fd uintptr) {
		// The spare is freed only for a client waiting: while it is, an
		// accept(2) of another listener may take it, and this one's
		// then lost. Without waiting: the listening socket does not
		// block.
		ready, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 0)
		if ready <= 0 || err != nil {
			return
		}
		syscall.Close(l.spare)
		l.spare = -1
		for n < maxShed {
			// Under ForkLock, as the net package accepts: a process
			// forked meanwhile would keep the descriptor open.
			syscall.ForkLock.RLock()
			c, _, err := syscall.Accept(int(fd))
			if err == nil {
				syscall.CloseOnExec(c)
			}
			syscall.ForkLock.RUnlock()
			if err != nil {
				break // none waiting (EAGAIN), or the descriptor taken
			}
			var answer []byte
			if l.answer != nil {
				answer = l.answer()
			}
			turnAway(c, answer)
			n++
		}
	})
	l.reserveLocked()
	return n
}

// turnAway answers the client of connection c and closes it.
func turnAway(c int, answer []byte) {
	// A BSD socket accepted takes its listener's O_NONBLOCK, Linux's not.
	syscall.SetNonblock(c, true)
	if len(answer) > 0 {
		syscall.Write(c, answer) // fits an empty send buffer
	}
	// What the client sent is read first: a socket closed with bytes
	// unread is reset (RFC 2525, 2.17), and a reset may reach the
	// client before it has read the answer.
	var buf [512]byte
	for range 16 {
		if n, _ := syscall.Read(c, buf[:]); n <= 0 {
			break
		}
	}
	syscall.Close(c)
}

func (l *shedListener) reserve() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reserveLocked()
}

func (l *shedListener) reserveLocked() {
	if l.spare >= 0 || l.closed {
		return
	}
	fd, err := openSpare()
	if err != nil {
		// Lost for want of a descriptor, the spare is reserved again
		// once one is free. Any other failure lasts (no /dev/null in a
		// chroot, a sandbox that forbids it): tried again by each
		// connection accepted, it would cost each a system call.
		l.lost.Store(errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE))
		return
	}
	l.spare = fd
	l.lost.Store(false)
}

// openSpare opens a descriptor to keep in reserve.
var openSpare = func() (int, error) {
	return syscall.Open("/dev/null", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
}

// Close closes the listener and frees its spare.
func (l *shedListener) Close() error {
	err := l.Listener.Close()
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		l.closed = true
		if l.spare >= 0 {
			syscall.Close(l.spare)
			l.spare = -1
		}
	}
	return err
}
