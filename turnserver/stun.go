package turnserver

import "icehub/turnserver/internal/stunwire"

// STUNPeekLen is how many bytes LooksLikeSTUN needs.
const STUNPeekLen = 8

// LooksLikeSTUN reports whether head starts like a STUN message (the top two bits zero and
// the magic cookie in place): what routes a stream on a port shared with HTTPS to TURN.
func LooksLikeSTUN(head []byte) bool { return stunwire.LooksLikeSTUN(head) }
