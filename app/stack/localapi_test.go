package stack

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/minisgg/studio-worker/app/api"
)

// The stack serves the local API where the settings say, follows the
// Settings page's switch and port, and writes its address file only while
// it serves.
func TestLocalAPIFollowsTheSettings(t *testing.T) {
	opts := testOptions(t)
	opts.LocalAPI = true
	// The setting's port is taken: an ephemeral one is used instead.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	_, port, _ := net.SplitHostPort(busy.Addr().String())
	st, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Shutdown(5 * time.Second)
	s := st.Settings.Current()
	s.LocalAPIPort, _ = strconv.Atoi(port)
	if _, err := st.Settings.Save(s); err != nil {
		t.Fatal(err)
	}
	srv := st.LocalAPI()
	if srv == nil || strings.HasSuffix(srv.URL(), ":"+port) {
		t.Fatalf("local API on a taken port: %v", srv)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got, err := api.Call(ctx, opts.ConfigDir, http.MethodGet, "/status")
	if err != nil || got.Version == "" {
		t.Fatalf("status through the file: %+v %v", got, err)
	}

	s.LocalAPIOff = true
	if _, err := st.Settings.Save(s); err != nil {
		t.Fatal(err)
	}
	if st.LocalAPI() != nil {
		t.Fatal("the local API still runs after it was switched off")
	}
	if _, err := os.Stat(api.InfoFile(opts.ConfigDir)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the address file stays after the API stopped: %v", err)
	}
	if _, err := api.Call(ctx, opts.ConfigDir, http.MethodGet, "/status"); err == nil {
		t.Fatal("a call succeeded with the API off")
	}

	s.LocalAPIOff = false
	if _, err := st.Settings.Save(s); err != nil {
		t.Fatal(err)
	}
	if st.LocalAPI() == nil || st.LocalAPI().Token() == srv.Token() {
		t.Fatal("switched on again: no server, or the old token")
	}
	if _, err := api.Call(ctx, opts.ConfigDir, http.MethodPost, "/pause"); err != nil || !st.Worker.Snapshot().Paused {
		t.Fatalf("pause through the API: %v", err)
	}
}
