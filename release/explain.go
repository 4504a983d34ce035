package release

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"syscall"
)

// StatusError is a server's answer other than 200 OK to a request for the
// feed or one of its files.
type StatusError struct {
	URL    string
	Status string // "404 Not Found"
}

func (e *StatusError) Error() string { return e.URL + " answered " + e.Status }

// Explain says why the release feed's server (or a download from it) could
// not be used, in a donor's words and without Go's error chain: "the name
// studio.minis.gg is not known (is this computer online?)", "studio.minis.gg
// refused the connection", "studio.minis.gg did not answer in time",
// "studio.minis.gg's certificate is not trusted", "studio.minis.gg answered
// 404 Not Found". ok is false for every other error (a bad signature, a
// feed that is not JSON, ...), whose own text already says what is wrong;
// the caller then shows err itself. The technical error belongs in the log.
func Explain(err error) (reason string, ok bool) {
	if err == nil {
		return "", false
	}
	host := "the server"
	var ue *url.Error
	if errors.As(err, &ue) {
		if u, perr := url.Parse(ue.URL); perr == nil && u.Hostname() != "" {
			host = u.Hostname()
		}
	}
	var dns *net.DNSError
	var se *StatusError
	var unknownCA x509.UnknownAuthorityError
	var badHost x509.HostnameError
	var invalid x509.CertificateInvalidError
	var verify *tls.CertificateVerificationError
	switch {
	case errors.As(err, &se):
		if u, perr := url.Parse(se.URL); perr == nil && u.Hostname() != "" {
			host = u.Hostname()
		}
		return host + " answered " + se.Status, true
	case errors.As(err, &dns):
		name := dns.Name
		if name == "" {
			name = host
		}
		if dns.IsTimeout {
			return fmt.Sprintf("looking up the name %s took too long (is this computer online?)", name), true
		}
		return fmt.Sprintf("the name %s is not known (is this computer online?)", name), true
	case errors.Is(err, syscall.ECONNREFUSED):
		return host + " refused the connection", true
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH):
		return host + " cannot be reached from this computer (is it online?)", true
	case errors.Is(err, syscall.ECONNRESET):
		return host + " closed the connection", true
	case errors.As(err, &unknownCA), errors.As(err, &badHost), errors.As(err, &invalid), errors.As(err, &verify):
		return host + "'s certificate is not trusted", true
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return host + " did not answer in time", true
	}
	return "", false
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
