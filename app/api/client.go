package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"strings"
	"time"
)

// NotRunningError says no Studio Worker answers in this config folder.
type NotRunningError struct{ Why string }

func (e *NotRunningError) Error() string {
	return "Studio Worker is not running (" + e.Why + "); start the app, or `studio-worker run`"
}

// clientTimeout bounds one control call: the routes answer at once.
const clientTimeout = 10 * time.Second

// Call sends one control request (such as POST /pause) to the app running
// with this config folder, found through its InfoFile, and decodes the
// status it answers. A missing file, or nothing answering at its address,
// is a *NotRunningError; an answer other than 200 is an error with the
// API's own message.
func Call(ctx context.Context, configDir, method, path string) (Status, error) {
	info, err := ReadInfo(configDir)
	if errors.Is(err, fs.ErrNotExist) {
		return Status{}, &NotRunningError{Why: "no local API address in " + InfoFile(configDir) + "; the local API may be switched off in Settings"}
	}
	if err != nil {
		return Status{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, clientTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(info.URL, "/")+path, nil)
	if err != nil {
		return Status{}, fmt.Errorf("the local API file %s is damaged: %v", InfoFile(configDir), err)
	}
	req.Header.Set("Authorization", "Bearer "+info.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return Status{}, &NotRunningError{Why: "nothing answers at " + info.URL + ", the address in " + InfoFile(configDir)}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return Status{}, fmt.Errorf("reading the answer of %s: %w", info.URL, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e apiError
		if json.Unmarshal(body, &e) == nil && e.Error.Message != "" {
			return Status{}, fmt.Errorf("the app answered %s: %s", resp.Status, e.Error.Message)
		}
		return Status{}, fmt.Errorf("the app answered %s", resp.Status)
	}
	var st Status
	if err := json.Unmarshal(body, &st); err != nil {
		return Status{}, fmt.Errorf("the app's answer is not a status: %v", err)
	}
	return st, nil
}

// Line is a status in one line, for the command line.
func (st Status) Line() string {
	var b strings.Builder
	b.WriteString(string(st.State))
	switch {
	case st.Current != nil:
		j := st.Current
		what := "job " + j.ID
		if j.Local {
			what = "local job " + j.ID
		}
		fmt.Fprintf(&b, ": %s (%s, %s)", what, j.Kind, j.Model)
		if j.Phase != "" {
			fmt.Fprintf(&b, ", %s", j.Phase)
			if j.Total > 0 {
				fmt.Fprintf(&b, " %d/%d", j.Done, j.Total)
			}
		}
		if st.PauseAfterJob {
			b.WriteString("; pauses after it")
		}
	case st.IdleReason != "" && st.IdleReason != string(st.State):
		b.WriteString(": " + st.IdleReason)
	case st.StopReason != "":
		b.WriteString(": " + st.StopReason)
	}
	fmt.Fprintf(&b, "; %d studio jobs done, %d failed; studio %s", st.Counters.Done, st.Counters.Failed, st.StudioURL)
	return b.String()
}
