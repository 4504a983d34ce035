package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/BurntSushi/toml"
	"github.com/adrg/xdg"

	"github.com/minisgg/studio-worker/app/api"
	"github.com/minisgg/studio-worker/app/update"
	"github.com/minisgg/studio-worker/release"
	"github.com/minisgg/studio-worker/settings"
	"github.com/minisgg/studio-worker/studio"
)

// cmdUpdate is `studio-worker update`: it reads the signed release feed
// and installs a newer version the way this copy was installed (package
// app/update), or with --check only says what there is. --to installs
// exactly that version, older ones included: the one way to go back.
// The program the update restarts runs this same command again, which
// then only checks and says it is the newest.
func cmdUpdate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("update", flag.ContinueOnError)
	checkOnly := fs.Bool("check", false, "only say whether a newer version is out")
	to := fs.String("to", "", "install exactly this version (e.g. 0.1.0), even an older one")
	feed := fs.String("feed", "", "address of the release feed (default: the setting, else the built-in one)")
	configDir := fs.String("config", "", "settings folder (default: the user's config folder)")
	verbose := fs.Bool("verbose", false, "with a feed or download that fails, also print Go's own error")
	if code, done := parseCommand(fs, args, stdout, stderr); done {
		return code
	}
	fail := func(err error) int {
		fmt.Fprintln(stderr, "studio-worker update: "+err.Error())
		return 1
	}
	// failNet is a failed check or download: the donor's line
	// (update.FailureLine), and the technical error with --verbose.
	failNet := func(err error) int {
		fmt.Fprintln(stderr, "studio-worker update: "+update.FailureLine(err))
		if _, ok := release.Explain(err); ok && *verbose {
			fmt.Fprintln(stderr, "studio-worker update: details: "+err.Error())
		}
		return 1
	}
	if from := update.TakeUpdatedFrom(); from != "" {
		update.ConfirmStarted()
		fmt.Fprintf(stdout, "now running Studio Worker %s (updated from %s)\n", studio.Version, from)
		*checkOnly, *to = true, ""
	}
	dir, err := configFolder(*configDir)
	if err != nil {
		return fail(err)
	}
	// Read, not Load: a check changes nothing in the settings folder.
	saved := settings.Default()
	if data, err := os.ReadFile(settings.NewStore(dir).Path()); err == nil {
		if _, err := toml.Decode(string(data), &saved); err != nil {
			return fail(fmt.Errorf("the settings file %s cannot be read: %v", settings.NewStore(dir).Path(), err))
		}
	}
	feedURL := strings.TrimSpace(*feed)
	if feedURL == "" {
		feedURL = strings.TrimSpace(saved.UpdateFeedURL)
	}
	if !*checkOnly {
		// The running app replaces itself between jobs; a second copy
		// doing it under its feet would not wait for the job.
		if _, err := api.Call(context.Background(), dir, http.MethodGet, "/status"); err == nil {
			return fail(errors.New("the app is running: press Check now on its Settings page (it installs between jobs), or quit it and run this again"))
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return fail(fmt.Errorf("cannot find this program's path: %v", err))
	}
	install := update.Detect(exe, update.SystemProbe())
	fmt.Fprintf(stdout, "this copy of Studio Worker %s: %s\n", studio.Version, install.Why)
	u := update.New(update.Config{
		FeedURL: feedURL,
		Install: install,
		WorkDir: filepath.Join(xdg.CacheHome, settings.AppDirName, "updates"),
	})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	offer, err := u.Check(ctx, *to)
	if err != nil {
		return failNet(err)
	}
	fmt.Fprintln(stdout, offer.Line())
	if offer.Release == nil || *checkOnly || install.Kind == update.KindSource {
		return 0
	}
	last := -1
	archive, err := u.Download(ctx, offer, func(done, total int64) {
		if total <= 0 {
			return
		}
		if pct := int(done * 100 / total); pct/25 != last/25 || (pct == 100 && last != 100) {
			last = pct
			fmt.Fprintf(stdout, "downloading Studio Worker %s: %d%% of %d bytes\n", offer.Release.Version, pct, total)
		}
	})
	if err != nil {
		return failNet(err)
	}
	// The new version runs this command again (same arguments), and only
	// checks: see TakeUpdatedFrom above.
	applied, err := u.Apply(ctx, offer, archive, append([]string{"update"}, args...))
	if err != nil {
		return fail(err)
	}
	fmt.Fprintln(stdout, applied.Line)
	if applied.Restart == nil {
		return 0
	}
	if err := applied.Restart.Do(); err != nil {
		return fail(err)
	}
	return 0
}
