package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// The TLS checks: is there TLS at all (no-tls), which versions and cipher
// suites it accepts (tls-weak), and the certificate it presents
// (tls-cert).

const remedyTLS = "Offer MQTT over TLS and close the plaintext port, or bind it to loopback. " +
	"Mosquitto: `listener 8883` with `certfile` and `keyfile`, and `listener 1883 127.0.0.1` (or no 1883 listener). " +
	"EMQX: enable `listeners.ssl.default` with `ssl_options.certfile` and `keyfile`, set `listeners.tcp.default.enable = false`. " +
	"Vigil: set `mqtt.tls_listen`, `mqtt.tls_cert` and `mqtt.tls_key` in vigil.yaml, and `mqtt.listen` to a loopback address or \"\"."

const remedyLocalMode = "Nothing to do while clients run on this host. To take devices from the network, leave local mode: " +
	"in vigil.yaml set `mqtt.tls_listen`, `mqtt.tls_cert` and `mqtt.tls_key`, keep `mqtt.listen` on loopback (or \"\"), " +
	"set `mqtt.anonymous: never` and add users with `vigil user add`."

func endpointURLs(eps []Endpoint) string {
	var s []string
	for _, ep := range eps {
		s = append(s, ep.URL())
	}
	return strings.Join(s, ", ")
}

func checkNoTLS(ctx context.Context, env *Env) ([]Finding, error) {
	eps := scanned(ctx, env)
	if len(eps) == 0 {
		return nil, Skip("no endpoint speaks MQTT")
	}
	var plain, secure []Endpoint
	for _, ep := range eps {
		if ep.TLS() {
			secure = append(secure, ep)
		} else {
			plain = append(plain, ep)
		}
	}
	var f Finding
	switch {
	case len(secure) == 0:
		f = Finding{
			Severity:    High,
			Title:       "MQTT without TLS: credentials and data cross the network in clear",
			Evidence:    "plaintext MQTT: " + endpointURLs(plain) + "\nno endpoint speaks MQTT over TLS (mqtts or wss)",
			Remediation: remedyTLS,
		}
	case len(plain) > 0:
		f = Finding{
			Severity:    Low,
			Title:       "TLS is offered, but plaintext MQTT answers too",
			Evidence:    "over TLS: " + endpointURLs(secure) + "\nplaintext: " + endpointURLs(plain) + "\nclients that use the plaintext port send their passwords and data in clear",
			Remediation: remedyTLS,
		}
	default:
		return nil, nil
	}
	if env.localMode() {
		f.Severity = Info
		f.Title = "Local mode: plaintext MQTT on loopback only"
		f.Evidence += "\nVigil's local mode listens on loopback only: this traffic never leaves this host."
		f.Remediation = remedyLocalMode
	}
	return []Finding{f}, nil
}

// tlsEndpoints returns the endpoints that speak MQTT over TLS, one per
// port.
func tlsEndpoints(ctx context.Context, env *Env) ([]Endpoint, error) {
	eps := scanned(ctx, env)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []Endpoint
	for _, ep := range eps {
		if ep.TLS() && !slices.ContainsFunc(out, func(e Endpoint) bool { return e.Addr() == ep.Addr() }) {
			out = append(out, ep)
		}
	}
	if len(out) == 0 {
		return nil, Skip("no endpoint speaks MQTT over TLS")
	}
	return out, nil
}

// noHandshake skips a TLS check when no handshake succeeded on any of
// the endpoints open-ports found (the broker went away since, or wants a
// client certificate): there is nothing to judge.
func noHandshake(urls []string, detail string) error {
	why := fmt.Sprintf("no TLS handshake succeeded on %s (a client certificate may be required)", strings.Join(urls, ", "))
	if detail != "" {
		why += ": " + detail
	}
	return Skip("%s", why)
}

// allSuites are every TLS 1.0–1.2 cipher suite Go implements.
func allSuites() []uint16 {
	var ids []uint16
	for _, s := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
		if slices.Contains(s.SupportedVersions, tls.VersionTLS12) {
			ids = append(ids, s.ID)
		}
	}
	return ids
}

// weakSuite tells whether a TLS 1.2 cipher suite is weak, how much, and
// why.
func weakSuite(id uint16) (Severity, string, bool) {
	name := tls.CipherSuiteName(id)
	switch {
	case strings.Contains(name, "_RC4_"):
		return Medium, "RC4 is broken", true
	case strings.Contains(name, "3DES"):
		return Medium, "3DES has 64-bit blocks (Sweet32)", true
	case strings.HasPrefix(name, "TLS_RSA_"):
		return Medium, "RSA key exchange: no forward secrecy", true
	case strings.HasSuffix(name, "_CBC_SHA256"):
		return Medium, "CBC with HMAC-SHA256: padding oracles (Lucky13)", true
	case strings.HasSuffix(name, "_CBC_SHA"):
		return Low, "CBC with HMAC-SHA1: padding oracles; forward secret, but not an AEAD", true
	}
	return Info, "", false
}

func weakSuites() []uint16 {
	var ids []uint16
	for _, id := range allSuites() {
		if _, _, weak := weakSuite(id); weak {
			ids = append(ids, id)
		}
	}
	return ids
}

// tlsSupport is what one TLS endpoint accepts.
type tlsSupport struct {
	versions map[uint16]string // accepted version -> suite it chose
	refused  []uint16
	weak     []uint16 // TLS 1.2 suites accepted when only weak ones were offered
}

func probeTLSSupport(ctx context.Context, env *Env, ep Endpoint) (*tlsSupport, error) {
	s := &tlsSupport{versions: map[uint16]string{}}
	for _, v := range []uint16{tls.VersionTLS10, tls.VersionTLS11, tls.VersionTLS12, tls.VersionTLS13} {
		cfg := probeTLS(ep.Host)
		cfg.MinVersion, cfg.MaxVersion = v, v
		c, err := tlsHandshake(ctx, env, ep, cfg)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err != nil {
			s.refused = append(s.refused, v)
			continue
		}
		s.versions[v] = tls.CipherSuiteName(c.ConnectionState().CipherSuite)
		c.Close()
	}
	if _, ok := s.versions[tls.VersionTLS12]; !ok {
		return s, nil
	}
	// Offer only weak suites; each one the server picks is taken out of
	// the offer for the next try.
	offer := weakSuites()
	for len(offer) > 0 {
		cfg := probeTLS(ep.Host)
		cfg.MinVersion, cfg.MaxVersion, cfg.CipherSuites = tls.VersionTLS12, tls.VersionTLS12, offer
		c, err := tlsHandshake(ctx, env, ep, cfg)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err != nil {
			break
		}
		id := c.ConnectionState().CipherSuite
		c.Close()
		if !slices.Contains(offer, id) {
			break
		}
		s.weak = append(s.weak, id)
		offer = slices.DeleteFunc(offer, func(x uint16) bool { return x == id })
	}
	return s, nil
}

func (s *tlsSupport) summary() string {
	var acc, ref []string
	for _, v := range []uint16{tls.VersionTLS10, tls.VersionTLS11, tls.VersionTLS12, tls.VersionTLS13} {
		if suite, ok := s.versions[v]; ok {
			acc = append(acc, fmt.Sprintf("%s (%s)", tls.VersionName(v), suite))
		}
	}
	for _, v := range s.refused {
		ref = append(ref, tls.VersionName(v))
	}
	out := "accepted: " + strings.Join(acc, ", ")
	if len(ref) > 0 {
		out += "\nrefused: " + strings.Join(ref, ", ")
	}
	return out
}

const remedyTLSVersions = "Accept TLS 1.2 and 1.3 only. " +
	"Mosquitto 2: leave `tls_version` unset (or `tls_version tlsv1.2`) and remove `@SECLEVEL=0` from `ciphers`. " +
	"EMQX: `listeners.ssl.default.ssl_options.versions = [\"tlsv1.3\", \"tlsv1.2\"]`. " +
	"Vigil: its TLS listener (`mqtt.tls_listen`) accepts TLS 1.2 and 1.3 only; a proxy in front of it may not."

const remedyTLSSuites = "Offer only forward-secret AEAD suites (ECDHE with AES-GCM or ChaCha20-Poly1305) at TLS 1.2. " +
	"Mosquitto: `ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305` on the TLS listener. " +
	"EMQX: the same list in `listeners.ssl.default.ssl_options.ciphers`. " +
	"Vigil: its TLS listener offers only those (and TLS 1.3's); upgrade an older Vigil."

func checkTLSWeak(ctx context.Context, env *Env) ([]Finding, error) {
	eps, err := tlsEndpoints(ctx, env)
	if err != nil {
		return nil, err
	}
	var findings []Finding
	var fine, failed []string
	for _, ep := range eps {
		s, err := probeTLSSupport(ctx, env, ep)
		if err != nil {
			return nil, err
		}
		if len(s.versions) == 0 {
			failed = append(failed, ep.URL())
			fine = append(fine, ep.URL()+": no TLS handshake succeeded (a client certificate may be required)")
			continue
		}
		var old []string
		for _, v := range []uint16{tls.VersionTLS10, tls.VersionTLS11} {
			if _, ok := s.versions[v]; ok {
				old = append(old, tls.VersionName(v))
			}
		}
		problem := false
		if len(old) > 0 {
			problem = true
			findings = append(findings, Finding{
				Severity:    High,
				Title:       fmt.Sprintf("%s accepts %s", ep.URL(), strings.Join(old, " and ")),
				Evidence:    ep.URL() + "\n" + s.summary(),
				Remediation: remedyTLSVersions,
			})
		}
		if len(s.weak) > 0 {
			problem = true
			sev := Low
			var lines []string
			for _, id := range s.weak {
				sv, why, _ := weakSuite(id)
				sev = max(sev, sv)
				lines = append(lines, fmt.Sprintf("%s: %s", tls.CipherSuiteName(id), why))
			}
			title := fmt.Sprintf("%s accepts weak cipher suites at TLS 1.2", ep.URL())
			if sev == Low {
				title = fmt.Sprintf("%s accepts CBC cipher suites with SHA-1 at TLS 1.2", ep.URL())
			}
			findings = append(findings, Finding{
				Severity:    sev,
				Title:       title,
				Evidence:    ep.URL() + "\noffered only weak suites, it accepted:\n" + strings.Join(lines, "\n") + "\n" + s.summary(),
				Remediation: remedyTLSSuites,
			})
		}
		if !problem {
			fine = append(fine, ep.URL()+"\n"+s.summary())
		}
	}
	if len(findings) > 0 {
		return findings, nil
	}
	if len(failed) == len(eps) {
		return nil, noHandshake(failed, "")
	}
	return []Finding{{
		Severity:    Info,
		Title:       "TLS 1.2 or later only, no weak cipher suite",
		Evidence:    strings.Join(fine, "\n"),
		Remediation: "Nothing to do. " + remedyTLSVersions,
	}}, nil
}

// servedCert is a certificate and the endpoints that present it.
type servedCert struct {
	chain []*x509.Certificate
	eps   []string
}

func checkTLSCert(ctx context.Context, env *Env) ([]Finding, error) {
	eps, err := tlsEndpoints(ctx, env)
	if err != nil {
		return nil, err
	}
	var certs []*servedCert
	byPrint := map[[32]byte]*servedCert{}
	var failed, why []string
	for _, ep := range eps {
		c, err := tlsHandshake(ctx, env, ep, probeTLS(ep.Host))
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err != nil {
			failed = append(failed, ep.URL())
			why = append(why, fmt.Sprintf("%s: %v", ep.URL(), err))
			continue
		}
		chain := c.ConnectionState().PeerCertificates
		c.Close()
		if len(chain) == 0 {
			continue
		}
		fp := sha256.Sum256(chain[0].Raw)
		sc := byPrint[fp]
		if sc == nil {
			sc = &servedCert{chain: chain}
			byPrint[fp] = sc
			certs = append(certs, sc)
		}
		sc.eps = append(sc.eps, ep.URL())
	}
	if len(certs) == 0 {
		return nil, noHandshake(failed, strings.Join(why, "; "))
	}
	var findings []Finding
	var ev []string
	for _, sc := range certs {
		fs := certProblems(env, sc)
		if len(fs) == 0 {
			ev = append(ev, certEvidence(sc, env.Opts.Now()))
		}
		findings = append(findings, fs...)
	}
	if len(findings) > 0 {
		return findings, nil
	}
	return []Finding{{
		Severity:    Info,
		Title:       "The certificate is valid, trusted and matches " + env.CertName(),
		Evidence:    strings.Join(ev, "\n\n"),
		Remediation: "Nothing to do; renew it before it expires (an ACME client such as certbot does it by itself).",
	}}, nil
}

const certFiles = "Mosquitto: `certfile` and `keyfile` of the TLS listener. EMQX: `listeners.ssl.default.ssl_options.certfile` and `keyfile`. " +
	"Vigil: `mqtt.tls_cert` and `mqtt.tls_key` in vigil.yaml. Restart the broker after replacing them."

// certProblems judges a certificate as of Options.Now.
func certProblems(env *Env, sc *servedCert) []Finding {
	leaf := sc.chain[0]
	now := env.Opts.Now()
	host := env.CertName()
	ev := certEvidence(sc, now)
	var out []Finding
	valid := true
	switch {
	case now.Before(leaf.NotBefore):
		valid = false
		out = append(out, Finding{
			Severity:    High,
			Title:       "The TLS certificate is not valid yet (from " + certTime(leaf.NotBefore) + ")",
			Evidence:    ev,
			Remediation: "Clients refuse it until then: check the broker's clock and the certificate's dates, and install a valid certificate. " + certFiles,
		})
	case now.After(leaf.NotAfter):
		valid = false
		out = append(out, Finding{
			Severity:    High,
			Title:       "The TLS certificate expired on " + certTime(leaf.NotAfter),
			Evidence:    ev,
			Remediation: "Renew it (an ACME client such as certbot renews by itself) and install the new one. " + certFiles,
		})
	}
	if err := leaf.VerifyHostname(host); err != nil {
		out = append(out, Finding{
			Severity:    High,
			Title:       "The TLS certificate is not for " + host,
			Evidence:    ev + "\n" + err.Error(),
			Remediation: "Clients that verify the name refuse it; those that do not can be deceived by any certificate. Issue one whose subjectAltName holds the name or address clients connect to (" + host + "). " + certFiles,
		})
	}
	if why, ok := certTrusted(env, sc, now); !ok {
		out = append(out, Finding{
			Severity: Medium,
			Title:    "The TLS certificate is not trusted: " + why,
			Evidence: ev,
			Remediation: "Clients cannot tell the broker from an impostor unless each one pins this certificate. Use a certificate from a public CA (e.g. Let's Encrypt) " +
				"or from your own CA installed on every client (give it to the audit with --ca). " + certFiles,
		})
	}
	if valid {
		if left := leaf.NotAfter.Sub(now); left < 30*24*time.Hour {
			out = append(out, Finding{
				Severity:    Low,
				Title:       fmt.Sprintf("The TLS certificate expires in %s (%s)", countNoun(certDays(left), "day"), certTime(leaf.NotAfter)),
				Evidence:    ev,
				Remediation: "Renew it before then (an ACME client such as certbot renews by itself). " + certFiles,
			})
		}
	}
	return out
}

// certTrusted verifies the chain against the system's roots and the CA
// given with --ca, at a time within the certificate's validity (expiry
// is judged on its own).
func certTrusted(env *Env, sc *servedCert, now time.Time) (string, bool) {
	leaf := sc.chain[0]
	at := now
	if at.Before(leaf.NotBefore) || at.After(leaf.NotAfter) {
		at = leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
	}
	inter := x509.NewCertPool()
	for _, c := range sc.chain[1:] {
		inter.AddCert(c)
	}
	pools := []*x509.CertPool{nil} // nil: the system's roots
	if p := env.TLSConfig(env.Target.Host).RootCAs; p != nil {
		pools = append(pools, p)
	}
	var err error
	for _, roots := range pools {
		if _, err = leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: at}); err == nil {
			return "", true
		}
	}
	var unknown x509.UnknownAuthorityError
	switch {
	case selfSigned(leaf):
		return "it is self-signed", false
	case errors.As(err, &unknown):
		return "its issuer (" + leaf.Issuer.String() + ") is not a known CA", false
	default:
		return err.Error(), false
	}
}

func selfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil
}

// certDays counts the days of d, a started day counting as one.
func certDays(d time.Duration) int { return int(math.Ceil(d.Hours() / 24)) }

func certTime(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") }

// certEvidence describes a certificate: where it is served, subject,
// issuer, names, validity and fingerprint.
func certEvidence(sc *servedCert, now time.Time) string {
	leaf := sc.chain[0]
	var sans []string
	sans = append(sans, leaf.DNSNames...)
	for _, ip := range leaf.IPAddresses {
		sans = append(sans, ip.String())
	}
	for _, u := range leaf.URIs {
		sans = append(sans, u.String())
	}
	if len(sans) == 0 {
		sans = []string{"none"}
	}
	fp := sha256.Sum256(leaf.Raw)
	hexes := make([]string, len(fp))
	for i, b := range fp {
		hexes[i] = fmt.Sprintf("%02X", b)
	}
	left := leaf.NotAfter.Sub(now)
	var state string
	switch {
	case now.Before(leaf.NotBefore):
		state = "not valid yet"
	case left < 0:
		state = "expired " + countNoun(certDays(-left), "day") + " ago"
	default:
		state = countNoun(certDays(left), "day") + " left"
	}
	return strings.Join([]string{
		"served on: " + strings.Join(sc.eps, ", "),
		"subject: " + leaf.Subject.String(),
		"issuer: " + leaf.Issuer.String(),
		"names (SAN): " + strings.Join(sans, ", "),
		fmt.Sprintf("valid: %s to %s (%s)", certTime(leaf.NotBefore), certTime(leaf.NotAfter), state),
		"SHA-256: " + strings.Join(hexes, ":"),
	}, "\n")
}
