package payload

// scanSeq finds the top-level "seq" of a payload that failed to parse, so
// the caller can still name (and negatively acknowledge) the frame. It walks
// the object's top-level members in order, skipping values without
// validating them, and gives up at the first thing it can't follow. A seq
// before the damage is found; one after it may or may not be. As in
// decodeObject, the first "seq" counts.
func scanSeq(data []byte) (uint64, bool) {
	s := skipSpace(data)
	if len(s) == 0 || s[0] != '{' {
		return 0, false
	}
	s = s[1:]
	for {
		s = skipSpace(s)
		key, rest, ok := scanString(s)
		if !ok {
			return 0, false
		}
		s = skipSpace(rest)
		if len(s) == 0 || s[0] != ':' {
			return 0, false
		}
		s = skipSpace(s[1:])
		if string(key) == "seq" {
			return scanSeqValue(s)
		}
		if s, ok = skipValue(s); !ok {
			return 0, false
		}
		s = skipSpace(s)
		if len(s) == 0 || s[0] != ',' {
			return 0, false
		}
		s = s[1:]
	}
}

// scanSeqValue parses the seq literal at the start of s. It must be followed
// by a delimiter, so that a payload cut off inside the number ("{"seq":12")
// does not yield a wrong, shorter seq.
func scanSeqValue(s []byte) (uint64, bool) {
	i := 0
	for i < len(s) && isNumberChar(s[i]) {
		i++
	}
	if i == len(s) || !isDelimiter(s[i]) {
		return 0, false
	}
	return parseUintLiteral(s[:i])
}

// scanString returns the raw (still escaped) content of the string at the
// start of s and what follows it.
func scanString(s []byte) (content, rest []byte, ok bool) {
	if len(s) == 0 || s[0] != '"' {
		return nil, nil, false
	}
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			return s[1:i], s[i+1:], true
		}
	}
	return nil, nil, false
}

// skipValue skips the JSON value at the start of s. Containers are skipped
// by bracket depth, which is enough to find the next top-level member.
func skipValue(s []byte) ([]byte, bool) {
	if len(s) == 0 {
		return nil, false
	}
	switch s[0] {
	case '"':
		_, rest, ok := scanString(s)
		return rest, ok
	case '{', '[':
		depth := 0
		for i := 0; i < len(s); i++ {
			switch s[i] {
			case '"':
				_, rest, ok := scanString(s[i:])
				if !ok {
					return nil, false
				}
				i = len(s) - len(rest) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return s[i+1:], true
				}
			}
		}
		return nil, false
	default:
		i := 0
		for i < len(s) && !isDelimiter(s[i]) {
			i++
		}
		return s[i:], i > 0
	}
}

func skipSpace(s []byte) []byte {
	for len(s) > 0 && isSpace(s[0]) {
		s = s[1:]
	}
	return s
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func isDelimiter(c byte) bool { return c == ',' || c == '}' || c == ']' || isSpace(c) }

func isNumberChar(c byte) bool {
	return isDigit(c) || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E'
}
