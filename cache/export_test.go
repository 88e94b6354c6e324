package cache

// What the tests reach beyond the relay's own use of a Cache (Get, Set,
// Stats, Close): removing a key, and waiting for buffered writes.

// Del removes key. It takes effect for Get at once, and orders after any
// earlier buffered Set of the same key.
func (c *Cache[V]) Del(key string) {
	c.rc.Del(key)
}

// Wait blocks until every Set and Del issued before it has been applied, so
// that a following Get (or Stats) sees their outcome, admitted or not.
// After Close it returns at once.
func (c *Cache[V]) Wait() {
	c.rc.Wait()
}
