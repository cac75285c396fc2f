package main

// A subscriber's kinds/keys filter. Checked by the publisher for every event
// of the topic and every subscriber, so small sets (the usual case) are a
// short linear scan over interned strings; large ones use a map.

const (
	maxFilterKinds = 64
	maxFilterKeys  = 100000
	smallSet       = 8
)

type stringSet struct {
	list []string
	m    map[string]struct{}
}

func newStringSet(items []string) stringSet {
	s := stringSet{}
	seen := make(map[string]struct{}, len(items))
	for _, it := range items {
		if _, dup := seen[it]; dup {
			continue
		}
		seen[it] = struct{}{}
		s.list = append(s.list, it)
	}
	if len(s.list) > smallSet {
		s.m = seen
	}
	return s
}

func (s *stringSet) has(x string) bool {
	if s.m != nil {
		_, ok := s.m[x]
		return ok
	}
	for _, v := range s.list {
		if v == x {
			return true
		}
	}
	return false
}

type filter struct {
	kinds, keys stringSet
}

// newFilter returns nil for "everything" and a reason for an invalid list.
func newFilter(kinds, keys []string) (*filter, string) {
	if len(kinds) > maxFilterKinds {
		return nil, "too many kinds"
	}
	if len(keys) > maxFilterKeys {
		return nil, "too many keys"
	}
	for _, k := range kinds {
		if len(k) == 0 || len(k) > 255 {
			return nil, "a kind is empty or longer than 255 bytes"
		}
	}
	for _, k := range keys {
		if len(k) == 0 || len(k) > 255 {
			return nil, "a key is empty or longer than 255 bytes"
		}
	}
	if len(kinds) == 0 && len(keys) == 0 {
		return nil, ""
	}
	return &filter{kinds: newStringSet(kinds), keys: newStringSet(keys)}, ""
}

// match: a nil filter matches everything.
func (f *filter) match(kind, key string) bool {
	if f == nil {
		return true
	}
	return (len(f.kinds.list) == 0 || f.kinds.has(kind)) && (len(f.keys.list) == 0 || f.keys.has(key))
}
