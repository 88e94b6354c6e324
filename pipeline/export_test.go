package pipeline

import "github.com/pulsedive-relay/relay/pulsedive"

// cacheKey names a document for one API key, as the pipeline does from
// the key's fingerprint.
func cacheKey(key pulsedive.APIKey, kind, value string) string {
	return fingerprintKey(key.Fingerprint(), kind, value)
}
