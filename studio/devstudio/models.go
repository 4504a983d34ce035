package devstudio

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/minisgg/studio-worker/engine"
)

// handleModel is GET/HEAD /dev/models/{path...}: a file under ModelsDir,
// with Range support so downloads can resume.
func (s *Server) handleModel(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodGet, http.MethodHead) {
		return
	}
	if s.opts.ModelsDir == "" {
		writeErr(w, http.StatusNotFound, "this dev studio serves no models folder")
		return
	}
	name := r.PathValue("path")
	if !safeRel(name) {
		writeErr(w, http.StatusBadRequest, "model path %q must be a relative path without .. parts", name)
		return
	}
	// OpenInRoot also refuses symlinks that lead out of the folder.
	f, err := os.OpenInRoot(s.opts.ModelsDir, filepath.FromSlash(name))
	if err != nil {
		writeErr(w, http.StatusNotFound, "no model file %q", name)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		writeErr(w, http.StatusNotFound, "no model file %q", name)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, path.Base(name), st.ModTime(), f)
}

func safeRel(name string) bool {
	if name == "" || strings.ContainsAny(name, "\\\x00") || strings.HasPrefix(name, "/") {
		return false
	}
	for _, seg := range strings.Split(name, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
	}
	return true
}

// ModelURL is the URL at which a dev studio served at base hands out the
// file rel (relative to its ModelsDir).
func ModelURL(base, rel string) string {
	segs := strings.Split(rel, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.TrimRight(base, "/") + "/dev/models/" + strings.Join(segs, "/")
}

// FileDigest returns the lowercase hex sha256 and the size of a file.
func FileDigest(p string) (sha string, size int64, err error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, fmt.Errorf("reading %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// ModelFile builds the modelSource entry for the file rel under modelsDir,
// served by a dev studio at base: URL, plain file name, size and sha256.
func ModelFile(base, modelsDir, rel string, role engine.FileRole) (engine.ModelFile, error) {
	if !safeRel(rel) {
		return engine.ModelFile{}, fmt.Errorf("model path %q must be a relative path without .. parts", rel)
	}
	sha, size, err := FileDigest(filepath.Join(modelsDir, filepath.FromSlash(rel)))
	if err != nil {
		return engine.ModelFile{}, err
	}
	return engine.ModelFile{
		Role: role, URL: ModelURL(base, rel), Filename: path.Base(rel),
		ApproxBytes: uint64(size), SHA256: sha,
	}, nil
}
