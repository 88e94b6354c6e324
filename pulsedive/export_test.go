package pulsedive

// JitteredBackoff is jitteredBackoff, for the tests of package
// pulsedive_test.
var JitteredBackoff = jitteredBackoff
