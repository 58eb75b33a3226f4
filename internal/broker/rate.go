package broker

// window counts events over a sliding window, approximated by two fixed
// windows: the current one's count plus the previous one's, weighted by the
// part of it the sliding window still covers (the estimate Cloudflare and
// nginx-style limiters use). It takes constant memory, allocates nothing and
// has no lock: its owner serialises calls. Times are nanoseconds on a
// monotonic clock (see guard.now).
type window struct {
	size      int64 // nanoseconds
	start     int64 // start of the current fixed window
	prev, cur int64
}

func newWindow(size int64) window { return window{size: size} }

// add counts one event at now.
func (c *window) add(now int64) {
	if d := now - c.start; d >= c.size {
		if d >= 2*c.size {
			c.prev = 0
		} else {
			c.prev = c.cur
		}
		c.cur = 0
		c.start = now - d%c.size
	}
	c.cur++
}

// over reports whether more than limit events happened in the sliding
// window that ends at now, and the estimated count. It is cheap when the
// answer is clearly no.
func (c *window) over(now, limit int64) (bool, int64) {
	if c.prev+c.cur <= limit {
		return false, c.prev + c.cur
	}
	n := c.estimate(now)
	return n > limit, n
}

// estimate returns the estimated number of events in the sliding window
// that ends at now (now not before the last add).
func (c *window) estimate(now int64) int64 {
	covered := c.size - (now - c.start) // of the previous window, in (0, size]
	if c.prev == 0 || covered <= 0 {
		return c.cur
	}
	return c.cur + int64(float64(c.prev)*float64(covered)/float64(c.size))
}
