package cache

// What the tests reach beyond the relay's own use of a Cache (Get, Set,
// Stats, Close): removing a key.

// Del removes key. It takes effect for Get at once, and orders after any
// earlier buffered Set of the same key.
func (c *Cache[V]) Del(key string) {
	c.rc.Del(key)
}
