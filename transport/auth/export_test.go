package auth

// The vocabulary the tests check against the contract: every Reason an
// Error carries.

// Reasons lists every reason an Error can carry, in the order the checks
// run (expired and not-yet-valid are one step).
func Reasons() []string {
	return []string{
		ReasonMissingHeader, ReasonWrongType, ReasonWrongStructure,
		ReasonMissingJWKSHost, ReasonWrongJWKSHost, ReasonWrongKey,
		ReasonKIDNotFound, ReasonExpired, ReasonNotYetValid,
		ReasonWrongAudience, ReasonWrongPayload,
	}
}

// newTokenKey is the key of raw accepted for auds.
func newTokenKey(raw string, auds []string) tokenKey {
	return tokenKey{token: raw, auds: audiencesKey(auds)}
}
