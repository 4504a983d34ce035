package studio

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/minisgg/studio-worker/logging"
	"github.com/minisgg/studio-worker/settings"
)

// Registration timing (§2.3, §1).
const (
	RegisterPollInterval = 30 * time.Second
	HTTPTimeout          = 60 * time.Second
)

// Registration states carried in Registration.State.
const (
	RegNone     = "none"
	RegPending  = "pending"
	RegApproved = "approved"
	RegRejected = "rejected"
)

// RegistrarConfig configures a Registrar.
type RegistrarConfig struct {
	BaseURL      string // the studio URL as the donor typed it
	Store        settings.CredentialStore
	InstallID    string
	Capabilities func() Capabilities
	UserAgent    string       // default UserAgent()
	HTTP         *http.Client // default: a client with a 60 s timeout
	Clock        Clock        // default RealClock
	Log          *slog.Logger
	OnChange     func(Registration) // called on the Run goroutine; must not block
	// PollInterval is the tick of the register-and-poll loop; 0 means the
	// protocol's 30 s. Each tick makes at most one HTTP call.
	PollInterval time.Duration
}

// Registrar runs the register-and-approve handshake (§2).
type Registrar struct {
	cfg RegistrarConfig
	log *slog.Logger
	// last is the registration last reported, so a failed try can say so
	// beside it and a later success can clear it.
	last Registration
}

// NewRegistrar returns a registrar; nothing happens until Run.
func NewRegistrar(cfg RegistrarConfig) *Registrar {
	cfg.Clock = clockOrReal(cfg.Clock)
	if cfg.HTTP == nil {
		cfg.HTTP = &http.Client{Timeout: HTTPTimeout}
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = UserAgent()
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = RegisterPollInterval
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Registrar{cfg: cfg, log: log.With(logging.KeyOp, "register")}
}

// RejectedError is returned by Run when the studio turned the worker down.
type RejectedError struct {
	Reason string // as the studio gave it; may be empty
}

func (e *RejectedError) Error() string {
	if e.Reason == "" {
		return "the studio rejected this worker (no reason given)"
	}
	return "the studio rejected this worker: " + e.Reason
}

// Run returns the credentials once the worker is approved. With both
// credentials already stored it returns at once without any HTTP (the fast
// path). Otherwise it sends a register-request and polls it, first at once
// and then every 30 s, until approved, rejected (*RejectedError) or ctx
// ends. The request id and secret are stored as they are created, so a
// restart keeps polling the same request.
func (r *Registrar) Run(ctx context.Context) (settings.Credentials, error) {
	api, err := APIBase(r.cfg.BaseURL)
	if err != nil {
		return settings.Credentials{}, err
	}
	if r.cfg.Store == nil {
		return settings.Credentials{}, errors.New("registration: no credential store")
	}
	creds, err := r.cfg.Store.Load()
	if err != nil {
		return settings.Credentials{}, err
	}
	if creds.Registered() {
		r.changed(Registration{State: RegApproved, WorkerID: creds.WorkerID})
		return creds, nil
	}
	if r.cfg.InstallID == "" {
		return creds, errors.New("registration: the install id is missing from the settings")
	}
	if creds.RequestID != "" && creds.RegistrationSecret != "" {
		r.changed(Registration{State: RegPending, RequestID: creds.RequestID})
	} else {
		r.changed(Registration{State: RegNone})
	}
	for {
		done, err := r.tick(ctx, api, &creds)
		if done || err != nil {
			return creds, err
		}
		if err := Sleep(ctx, r.cfg.Clock, r.cfg.PollInterval); err != nil {
			return creds, err
		}
	}
}

func (r *Registrar) changed(reg Registration) {
	r.last = reg
	if r.cfg.OnChange != nil {
		r.cfg.OnChange(reg)
	}
}

func (r *Registrar) save(c settings.Credentials) error {
	if err := r.cfg.Store.Save(c); err != nil {
		return fmt.Errorf("registration: cannot store the credentials: %w", err)
	}
	return nil
}

// trouble reports why a try failed and when the next one comes, beside
// the registration as it stands.
func (r *Registrar) trouble(problem string) {
	reg := r.last
	reg.Problem, reg.NextTry = problem, r.cfg.Clock.Now().Add(r.cfg.PollInterval)
	r.changed(reg)
}

// cleared reports the registration again without a problem after a try
// went through.
func (r *Registrar) cleared() {
	if r.last.Problem != "" {
		reg := r.last
		reg.Problem, reg.NextTry = "", time.Time{}
		r.changed(reg)
	}
}

// tick makes at most one HTTP call: a register-request when none is in
// flight, otherwise a poll.
func (r *Registrar) tick(ctx context.Context, api string, creds *settings.Credentials) (done bool, err error) {
	if creds.RequestID == "" || creds.RegistrationSecret == "" {
		return false, r.request(ctx, api, creds)
	}
	return r.poll(ctx, api, creds)
}

// NewRegistrationSecret returns 32 random bytes as 64 lowercase hex chars.
func NewRegistrationSecret() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

// RegistrationSecretHash is the lowercase hex SHA-256 of the secret's hex
// string (its ASCII bytes, not the raw 32 bytes), as §2.1 requires.
func RegistrationSecretHash(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// RegisterRequest is the body of POST …/workers/register-request.
type RegisterRequest struct {
	InstallID              string       `json:"installId"`
	RegistrationSecretHash string       `json:"registrationSecretHash"`
	Capabilities           Capabilities `json:"capabilities"`
	UserAgent              string       `json:"userAgent"`
}

// RegisterRequestResponse is the studio's answer to a register-request.
type RegisterRequestResponse struct {
	RequestID string `json:"requestId"`
	Status    string `json:"status"`
}

// RegisterStatus is the answer to a poll, tagged by Status.
type RegisterStatus struct {
	Status    string `json:"status"` // pending, approved, rejected
	WorkerID  string `json:"workerId,omitempty"`
	AuthToken string `json:"authToken,omitempty"`
	Reason    string `json:"reason,omitempty"`
}

func (r *Registrar) request(ctx context.Context, api string, creds *settings.Credentials) error {
	if creds.RegistrationSecret == "" || creds.RequestID != "" {
		// A new secret only when no request is in flight; a secret kept
		// from a failed attempt is reused.
		secret, err := NewRegistrationSecret()
		if err != nil {
			return fmt.Errorf("registration: no randomness for the secret: %w", err)
		}
		creds.RequestID, creds.RegistrationSecret = "", secret
		if err := r.save(*creds); err != nil {
			return err
		}
	}
	var caps Capabilities
	if r.cfg.Capabilities != nil {
		caps = r.cfg.Capabilities()
	}
	body, err := json.Marshal(RegisterRequest{
		InstallID:              r.cfg.InstallID,
		RegistrationSecretHash: RegistrationSecretHash(creds.RegistrationSecret),
		Capabilities:           caps,
		UserAgent:              r.cfg.UserAgent,
	})
	if err != nil {
		return err
	}
	status, data, err := r.do(ctx, http.MethodPost, RegisterRequestURL(api), "", body)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r.log.Warn("the studio could not be reached to ask for registration; trying again", "error", err, "retryIn", r.cfg.PollInterval)
		r.trouble("the studio could not be reached: " + err.Error())
		return nil
	}
	if status < 200 || status > 299 {
		r.log.Warn("the studio did not take the registration request; trying again",
			"status", status, "answer", bodySnippet(data), "retryIn", r.cfg.PollInterval)
		r.trouble(fmt.Sprintf("the studio did not take the request (HTTP %d)", status))
		return nil
	}
	var resp RegisterRequestResponse
	if err := json.Unmarshal(data, &resp); err != nil || resp.RequestID == "" {
		r.log.Warn("the studio's answer to the registration request has no request id; trying again", "answer", bodySnippet(data))
		return nil
	}
	creds.RequestID = resp.RequestID
	if err := r.save(*creds); err != nil {
		return err
	}
	r.log.Info("registration requested; waiting for an operator to approve this worker", "requestId", resp.RequestID)
	r.changed(Registration{State: RegPending, RequestID: resp.RequestID})
	return nil
}

func (r *Registrar) poll(ctx context.Context, api string, creds *settings.Credentials) (bool, error) {
	reqID := creds.RequestID
	status, data, err := r.do(ctx, http.MethodGet, RegisterPollURL(api, reqID), creds.RegistrationSecret, nil)
	if err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		r.log.Warn("the studio could not be reached to check the registration; trying again", "requestId", reqID, "error", err)
		r.trouble("the studio could not be reached: " + err.Error())
		return false, nil
	}
	switch {
	case status == http.StatusNotFound:
		// The studio forgot the request: start over on the next tick.
		creds.RequestID, creds.RegistrationSecret = "", ""
		if err := r.save(*creds); err != nil {
			return false, err
		}
		r.log.Warn("the studio no longer knows the registration request; a new one will be sent", "requestId", reqID)
		r.changed(Registration{State: RegNone})
		return false, nil
	case status < 200 || status > 299:
		r.log.Warn("checking the registration failed; still waiting for approval",
			"requestId", reqID, "status", status, "answer", bodySnippet(data))
		r.trouble(fmt.Sprintf("the studio did not answer the check (HTTP %d)", status))
		return false, nil
	}
	var st RegisterStatus
	if err := json.Unmarshal(data, &st); err != nil {
		r.log.Warn("the studio's registration answer is unreadable; still waiting", "requestId", reqID, "error", err)
		return false, nil
	}
	switch st.Status {
	case RegPending:
		r.log.Debug("registration still pending", "requestId", reqID)
		r.cleared()
		return false, nil
	case RegApproved:
		if st.WorkerID == "" || st.AuthToken == "" {
			r.log.Warn("the studio approved the registration without credentials; still waiting", "requestId", reqID)
			return false, nil
		}
		// Polling again would rotate the token, so save it and stop here.
		*creds = settings.Credentials{WorkerID: st.WorkerID, AuthToken: st.AuthToken}
		if err := r.save(*creds); err != nil {
			return false, err
		}
		r.log.Info("registration approved", "workerId", st.WorkerID, "requestId", reqID)
		r.changed(Registration{State: RegApproved, RequestID: reqID, WorkerID: st.WorkerID})
		return true, nil
	case RegRejected:
		creds.RequestID, creds.RegistrationSecret = "", ""
		if err := r.save(*creds); err != nil {
			return false, err
		}
		r.log.Warn("registration rejected by the studio", "requestId", reqID, "reason", st.Reason)
		r.changed(Registration{State: RegRejected, RequestID: reqID, Reason: st.Reason})
		return true, &RejectedError{Reason: st.Reason}
	default:
		r.log.Warn("the studio gave an unknown registration status; still waiting", "requestId", reqID, "status", st.Status)
		return false, nil
	}
}

// do makes one HTTP call bounded by the 60 s limit and returns the status
// and at most 1 MiB of the body.
func (r *Registrar) do(ctx context.Context, method, url, bearer string, body []byte) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, HTTPTimeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("User-Agent", r.cfg.UserAgent)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := r.cfg.HTTP.Do(req)
	if err != nil {
		return 0, nil, redactURLError(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, nil, err
	}
	return resp.StatusCode, data, nil
}

// bodySnippet keeps an error body short enough for a log line.
func bodySnippet(b []byte) string {
	const max = 200
	if len(b) > max {
		return string(b[:max]) + "…"
	}
	return string(b)
}
