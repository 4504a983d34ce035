// Package instance keeps one desktop app per user: the first launch holds a
// file lock and listens on a local socket beside it; a later launch finds
// the lock taken, asks the first one to show its window, and exits.
package instance

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/gofrs/flock"
)

// ErrRunning is returned by Acquire when another instance holds the lock.
// Its message is meant for the person who launched the second copy.
var ErrRunning = errors.New("Studio Worker is already running for this user")

const (
	lockName   = "instance.lock"
	socketName = "instance.sock"
	// askTimeout bounds the conversation with the first instance so that a
	// hung first instance cannot hang the second launch too.
	askTimeout = 5 * time.Second
)

// Instance is the lock held by the first launch.
type Instance struct {
	lock *flock.Flock
	ln   net.Listener
	sock string
	wg   sync.WaitGroup
}

// Acquire takes the per-user lock in dir. When it is free, onShow is called
// (on a goroutine of this package) each time a later launch asks for the
// window, with the page that launch named ("" for none). When it is taken,
// Acquire asks the holder to show its window at page and returns an error
// wrapping ErrRunning that says whether the holder answered.
func Acquire(dir, page string, onShow func(page string)) (*Instance, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("cannot create %s for the single-instance lock: %w", dir, err)
	}
	lk := flock.New(filepath.Join(dir, lockName))
	ok, err := lk.TryLock()
	if err != nil {
		return nil, fmt.Errorf("cannot take the single-instance lock: %w", err)
	}
	sock := filepath.Join(dir, socketName)
	if !ok {
		if err := ask(sock, page); err != nil {
			return nil, fmt.Errorf("%w, but it did not answer when asked to show its window (%v)", ErrRunning, err)
		}
		return nil, fmt.Errorf("%w; its window has been brought forward", ErrRunning)
	}
	// We hold the lock, so a socket file left here is from a process that
	// died without cleaning up.
	_ = os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		_ = lk.Unlock()
		return nil, fmt.Errorf("cannot listen on %s: %w", sock, err)
	}
	in := &Instance{lock: lk, ln: ln, sock: sock}
	in.wg.Add(1)
	go in.serve(onShow)
	return in, nil
}

func (in *Instance) serve(onShow func(string)) {
	defer in.wg.Done()
	for {
		c, err := in.ln.Accept()
		if err != nil {
			return // listener closed
		}
		in.wg.Add(1)
		go func() {
			defer in.wg.Done()
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(askTimeout))
			line, err := bufio.NewReader(c).ReadString('\n')
			verb, page, _ := strings.Cut(strings.TrimSpace(line), " ")
			if err != nil || verb != "show" {
				_, _ = fmt.Fprintln(c, "unknown request")
				return
			}
			if onShow != nil {
				onShow(page)
			}
			_, _ = fmt.Fprintln(c, "ok")
		}()
	}
}

func ask(sock, page string) error {
	c, err := net.DialTimeout("unix", sock, askTimeout)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(askTimeout))
	msg := "show"
	if page = strings.Join(strings.Fields(page), " "); page != "" {
		msg += " " + page
	}
	if _, err := fmt.Fprintln(c, msg); err != nil {
		return err
	}
	reply, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if r := strings.TrimSpace(reply); r != "ok" {
		return fmt.Errorf("unexpected reply %q", r)
	}
	return nil
}

// Release stops listening and frees the lock for the next launch.
func (in *Instance) Release() error {
	err := in.ln.Close()
	in.wg.Wait()
	_ = os.Remove(in.sock)
	if uerr := in.lock.Unlock(); err == nil {
		err = uerr
	}
	return err
}
