package engine

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
)

// LocalModel is a model on disk that a loaded engine can run without a
// download: what the local API lists under /v1/models and runs when a
// request names it.
type LocalModel struct {
	// ID is the name a request uses: a stored model's id, or the file name
	// of a .gguf placed straight in the models folder.
	ID     string
	Engine EngineName
	Kind   TaskKind
	// Files are the model's files by role, all inside the models folder.
	Files map[FileRole]string
	Bytes uint64
}

// modelExts are the file types a one-file model may be.
var modelExts = []string{".gguf", ".safetensors", ".ckpt"}

// LocalModels lists the models in the runner's models folder that a loaded
// engine can run: a .gguf placed in the folder (llama.cpp) that passes the
// GGUF structure check (Store.LooseLeftOut says why one does not), and each
// stored model folder whose engine is known and loaded and which holds
// exactly one finished model file (run as its "model" role). A stored
// model of several files is left out: the folder does not record which
// file plays which role. Sorted by ID.
func (r *Runner) LocalModels() ([]LocalModel, error) {
	st := r.Store()
	if st == nil {
		return nil, fmt.Errorf("the worker has no models folder configured")
	}
	stored, err := st.List()
	if err != nil {
		return nil, err
	}
	var out []LocalModel
	add := func(id string, eng EngineName, kind TaskKind, path string, size uint64) {
		if _, err := r.router.Route(eng, kind); err != nil {
			return // no loaded engine runs it
		}
		out = append(out, LocalModel{ID: id, Engine: eng, Kind: kind, Files: map[FileRole]string{RoleModel: path}, Bytes: size})
	}
	for _, m := range stored {
		kind := KindLLM
		switch m.Engine {
		case EngineLlamaCpp:
		case EngineSDCpp:
			kind = KindImage
		default:
			continue
		}
		var files []StoredFile
		for _, f := range m.Files {
			if !f.Partial && slices.Contains(modelExts, strings.ToLower(filepath.Ext(f.Name))) {
				files = append(files, f)
			}
		}
		if len(files) != 1 || len(m.Files) != 1 {
			continue
		}
		add(m.ID, m.Engine, kind, filepath.Join(m.Dir, files[0].Name), files[0].Bytes)
	}
	for _, l := range st.looseGGUFs() {
		if l.err == nil {
			add(l.name, EngineLlamaCpp, KindLLM, l.path, l.size)
		}
	}
	slices.SortFunc(out, func(a, b LocalModel) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// LocalModel finds the model a local request names (see LocalModels); the
// error says what there is instead.
func (r *Runner) LocalModel(id string, kind TaskKind) (LocalModel, error) {
	all, err := r.LocalModels()
	if err != nil {
		return LocalModel{}, err
	}
	var names []string
	for _, m := range all {
		if m.Kind != kind {
			continue
		}
		if m.ID == id {
			return m, nil
		}
		names = append(names, m.ID)
	}
	if len(names) == 0 {
		return LocalModel{}, fmt.Errorf("there is no %s model in the models folder %s that this worker can run", kind, r.Store().Root())
	}
	return LocalModel{}, fmt.Errorf("there is no %s model %q in the models folder; there are: %s", kind, id, strings.Join(names, ", "))
}

// Job makes a job that runs the model on disk: no download, the files
// given (Runner.Run checks them before the engine opens them).
func (m LocalModel) Job(id string, task Task) Job {
	files := make(map[FileRole]string, len(m.Files))
	for k, v := range m.Files {
		files[k] = v
	}
	return Job{ID: id, Model: m.ID, Task: task, Source: ModelSource{Engine: m.Engine}, Files: files}
}

// localStamp identifies a file's content as far as a check needs: a file
// with the same size and modification time is not checked again.
type localStamp struct {
	size int64
	mod  int64
}

// localCheck is a content check's outcome for one stamp of a file.
type localCheck struct {
	stamp localStamp
	err   error
}

// localChecked remembers the content checks of local files (by engine,
// role and path), passed or failed, so that each local request or
// heartbeat does not read a model's header again (tens of milliseconds for
// a vocabulary of 50 000 tokens).
var localChecked struct {
	sync.Mutex
	m map[string]localCheck
}

// checkLocalContent is CheckModelContent remembered by the file's stamp.
func checkLocalContent(path string, eng EngineName, role FileRole) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	key := string(eng) + "\x00" + string(role) + "\x00" + path
	stamp := localStamp{fi.Size(), fi.ModTime().UnixNano()}
	localChecked.Lock()
	c, ok := localChecked.m[key]
	localChecked.Unlock()
	if ok && c.stamp == stamp {
		return c.err
	}
	err = CheckModelContent(path, eng, role)
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return err // the file could not be read: not the file's verdict
	}
	localChecked.Lock()
	if localChecked.m == nil || len(localChecked.m) > 1000 {
		localChecked.m = map[string]localCheck{}
	}
	localChecked.m[key] = localCheck{stamp, err}
	localChecked.Unlock()
	return err
}

// looseGGUF is a .gguf placed straight in the models folder, with the
// outcome of its structure check.
type looseGGUF struct {
	name, path string
	size       uint64
	err        error
}

// looseWarned holds the paths of loose .gguf files whose failed check was
// logged.
var looseWarned sync.Map

// looseGGUFs checks the .gguf files placed straight in the models folder
// (not hidden ones), in name order. A file that fails is logged once, and
// again when it passes.
func (s *Store) looseGGUFs() []looseGGUF {
	entries, _ := os.ReadDir(s.root)
	var out []looseGGUF
	for _, e := range entries {
		p, ok := s.LooseGGUF(e.Name())
		if !ok || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		l := looseGGUF{name: e.Name(), path: p}
		if fi, err := e.Info(); err == nil {
			l.size = uint64(fi.Size())
		}
		l.err = checkLocalContent(p, EngineLlamaCpp, RoleModel)
		_, warned := looseWarned.Load(p)
		switch {
		case l.err != nil && !warned:
			// Once per file, not per content: a file being copied in
			// changes at every look.
			looseWarned.Store(p, struct{}{})
			s.log.Warn("the GGUF file "+e.Name()+" in the models folder is left out: "+leftOutReason(l.err), "op", "store", "path", p)
		case l.err == nil && warned:
			looseWarned.Delete(p)
			s.log.Info("the GGUF file "+e.Name()+" in the models folder passes its check now and is offered", "op", "store", "path", p)
		}
		out = append(out, l)
	}
	return out
}

// LeftOutModel is a model file in the models folder that is not offered to
// the studio nor listed by the local API, and why.
type LeftOutModel struct {
	Name   string // the file's name in the models folder
	Reason string // in words: "the GGUF file is malformed: …"
}

// LooseLeftOut lists the .gguf files placed straight in the models folder
// that fail the GGUF structure check (engine/gguf), so that they are not
// advertised: the donor's own files, never deleted. Sorted by name.
func (s *Store) LooseLeftOut() []LeftOutModel {
	var out []LeftOutModel
	for _, l := range s.looseGGUFs() {
		if l.err != nil {
			out = append(out, LeftOutModel{Name: l.name, Reason: leftOutReason(l.err)})
		}
	}
	return out
}

// leftOutReason is a check's error without the file name its JobError
// puts first.
func leftOutReason(err error) string {
	var je *JobError
	if errors.As(err, &je) && je.Reason != "" {
		return je.Reason
	}
	return err.Error()
}

// localFiles checks the files of a job made by LocalModel.Job: each lies in
// the models folder and passes the content check of its engine.
func localFiles(store *Store, eng EngineName, files map[FileRole]string) (map[FileRole]string, error) {
	root := filepath.Clean(store.Root()) + string(filepath.Separator)
	out := make(map[FileRole]string, len(files))
	for role, p := range files {
		clean := filepath.Clean(p)
		if !strings.HasPrefix(clean, root) {
			return nil, fmt.Errorf("the model file %s is not in the models folder %s", p, store.Root())
		}
		if err := checkLocalContent(clean, eng, role); err != nil {
			return nil, fmt.Errorf("the file %s in the models folder is not a usable model: %w", clean, err)
		}
		out[role] = clean
	}
	return out, nil
}
