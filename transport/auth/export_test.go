package auth

// The vocabularies the tests check against the contract and the metrics:
// every Reason an Error carries, and every kind of refusal.

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

// FailureKinds lists every kind of refusal Observer.AuthFailure and the
// "reason" field of a refusal's log line can carry, in the order the
// checks run.
func FailureKinds() []string {
	return []string{
		kindMissingHeader, kindWrongType, kindWrongStructure, kindMissingJWKSHost,
		kindJWKSHostNotAllowed, kindJWKSUnavailable, kindWrongKey, kindKIDNotFound,
		kindExpired, kindNotYetValid, kindWrongAudience, kindWrongPayload,
	}
}
