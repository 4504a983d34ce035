package update

import (
	"fmt"
	"os"
)

// swapIn puts the folder tree in app's place and keeps the old app folder
// as backup. Where the system can exchange two names in one step
// (exchange), app is never missing; elsewhere it is for a moment between
// two renames.
func swapIn(app, tree, backup string) error {
	if err := exchange(tree, app); err == nil {
		// tree now names the old folder.
		if err := os.Rename(tree, backup); err != nil {
			if xerr := exchange(tree, app); xerr != nil {
				return fmt.Errorf("keeping the old version as %s: %v, and swapping back: %v", backup, err, xerr)
			}
			return fmt.Errorf("keeping the old version as %s: %w", backup, err)
		}
		return nil
	}
	if err := os.Rename(app, backup); err != nil {
		return err
	}
	if err := os.Rename(tree, app); err != nil {
		if rerr := os.Rename(backup, app); rerr != nil {
			return fmt.Errorf("%v, and putting the old one back: %v", err, rerr)
		}
		return err
	}
	return nil
}

// swapBack puts backup in app's place again and removes the version that
// failed.
func swapBack(app, backup string) error {
	if err := exchange(backup, app); err == nil {
		return os.RemoveAll(backup)
	}
	failed := app + ".failed"
	_ = os.RemoveAll(failed)
	if err := os.Rename(app, failed); err != nil {
		return err
	}
	if err := os.Rename(backup, app); err != nil {
		return err
	}
	return os.RemoveAll(failed)
}
