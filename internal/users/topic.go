package users

import "strings"

// ValidFilter reports whether f is a valid MQTT topic filter: not empty, '#'
// only as the whole last level, '+' only as a whole level, no NUL.
func ValidFilter(f string) bool {
	if f == "" || strings.IndexByte(f, 0) >= 0 {
		return false
	}
	if !strings.ContainsAny(f, "+#") {
		return true // the common case, a topic name: no allocation
	}
	for rest := f; ; {
		l, r, more := strings.Cut(rest, "/")
		if strings.Contains(l, "#") && (l != "#" || more) {
			return false
		}
		if strings.Contains(l, "+") && l != "+" {
			return false
		}
		if !more {
			return true
		}
		rest = r
	}
}

// MatchTopic reports whether the topic name matches filter. As the MQTT spec
// requires, wildcards at the first level do not match topics starting with
// '$' (so "#" does not match "$SYS/...").
func MatchTopic(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	for {
		fl, frest, fmore := strings.Cut(filter, "/")
		tl, trest, tmore := strings.Cut(topic, "/")
		switch {
		case fl == "#":
			return true
		case fl != "+" && fl != tl:
			return false
		}
		if !fmore || !tmore {
			// "a/#" also matches "a" (the parent level).
			return fmore == tmore || (fmore && frest == "#")
		}
		filter, topic = frest, trest
	}
}

// FilterCovers reports whether every topic that filter can match is matched
// by pattern, so that a subscription to filter reveals nothing pattern does
// not allow. For example "vigil/#" covers "vigil/+/x/telemetry" but
// "vigil/+/x/#" does not cover "vigil/#".
func FilterCovers(pattern, filter string) bool {
	if strings.HasPrefix(filter, "$") != strings.HasPrefix(pattern, "$") &&
		(strings.HasPrefix(pattern, "+") || strings.HasPrefix(pattern, "#")) {
		return false
	}
	for {
		pl, prest, pmore := strings.Cut(pattern, "/")
		fl, frest, fmore := strings.Cut(filter, "/")
		switch {
		case pl == "#":
			return true
		case fl == "#":
			return false // the filter reaches deeper than the pattern allows
		case pl == "+":
			// any single level of the filter, including '+', is covered
		case pl != fl:
			return false
		}
		if !pmore || !fmore {
			return pmore == fmore || (pmore && prest == "#")
		}
		pattern, filter = prest, frest
	}
}

// FiltersOverlap reports whether some topic name matches both filters a
// and b (both valid filters).
func FiltersOverlap(a, b string) bool {
	if strings.HasPrefix(a, "$") != strings.HasPrefix(b, "$") {
		// A wildcard at the first level never matches a '$' topic.
		if strings.HasPrefix(a, "$") && (strings.HasPrefix(b, "+") || strings.HasPrefix(b, "#")) ||
			strings.HasPrefix(b, "$") && (strings.HasPrefix(a, "+") || strings.HasPrefix(a, "#")) {
			return false
		}
	}
	for {
		al, arest, amore := strings.Cut(a, "/")
		bl, brest, bmore := strings.Cut(b, "/")
		switch {
		case al == "#" || bl == "#":
			return true
		case al != "+" && bl != "+" && al != bl:
			return false
		}
		if !amore || !bmore {
			// One ends here: they meet only if the other ends too, or
			// goes on with just "#" (which matches its parent level).
			return amore == bmore || (amore && arest == "#") || (bmore && brest == "#")
		}
		a, b = arest, brest
	}
}
