package config

import (
	"fmt"
	"os"
	"strings"
	"unicode"
)

// EnvUnsetError is the error of an "env:NAME" secret whose variable is
// not set.
type EnvUnsetError struct{ Name string }

func (e *EnvUnsetError) Error() string {
	return fmt.Sprintf("environment variable %s is not set", e.Name)
}

// Resolve reads the secret from where s says it is kept. An empty secret
// is an error: it would let anyone in.
func (s Secret) Resolve() (string, error) {
	kind, ref, _ := strings.Cut(string(s), ":")
	var val string
	switch kind {
	case "env":
		v, ok := os.LookupEnv(ref)
		if !ok {
			return "", &EnvUnsetError{Name: ref}
		}
		val = v
	case "file":
		b, err := os.ReadFile(ref)
		if err != nil {
			return "", fmt.Errorf("read secret: %w", err)
		}
		val = string(b)
	default:
		return "", fmt.Errorf("want env:NAME or file:PATH, got a reference of kind %q", kind)
	}
	// The secret travels in an HTTP header, which loses white space at
	// its ends and cannot carry control characters: trimmed, both ends
	// agree; with a control character inside, neither could.
	val = strings.TrimSpace(val)
	if val == "" {
		return "", fmt.Errorf("secret from %s is empty", s)
	}
	if strings.ContainsFunc(val, unicode.IsControl) {
		return "", fmt.Errorf("secret from %s holds a control character, which an HTTP header cannot carry", s)
	}
	return val, nil
}
