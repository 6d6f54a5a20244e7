package turnserver

import (
	"errors"

	"github.com/pion/stun/v4"

	"icehub/turnserver/internal/stunwire"
)

// resign returns msg (which verified under key) with its NONCE replaced by nonce and
// MESSAGE-INTEGRITY recomputed under the same key: what pion, which knows only its own
// nonces, accepts. Attributes after MESSAGE-INTEGRITY other than FINGERPRINT were not
// covered by it and are dropped; FINGERPRINT is recomputed when the request had one.
func resign(msg *stun.Message, nonce string, key []byte) ([]byte, error) {
	out := &stun.Message{Type: msg.Type, TransactionID: msg.TransactionID}
	out.WriteHeader()
	fingerprint := false
	sawNonce := false
	for i, attr := range msg.Attributes {
		if attr.Type == stun.AttrMessageIntegrity {
			for _, after := range msg.Attributes[i+1:] {
				fingerprint = fingerprint || after.Type == stun.AttrFingerprint
			}
			break
		}
		if attr.Type == stun.AttrNonce {
			if sawNonce {
				continue
			}
			sawNonce = true
			out.Add(stun.AttrNonce, []byte(nonce))
			continue
		}
		out.Add(attr.Type, attr.Value)
	}
	if !sawNonce {
		return nil, errors.New("no nonce to replace")
	}
	if err := stun.MessageIntegrity(key).AddTo(out); err != nil {
		return nil, err
	}
	if fingerprint {
		if err := stun.Fingerprint.AddTo(out); err != nil {
			return nil, err
		}
	}
	return out.Raw, nil
}

// replaceNonce returns the unauthenticated error response b with its NONCE value replaced.
func replaceNonce(b []byte, nonce string) ([]byte, error) {
	in := &stun.Message{Raw: append([]byte(nil), b...)}
	if err := in.Decode(); err != nil {
		return nil, err
	}
	out := &stun.Message{Type: in.Type, TransactionID: in.TransactionID}
	out.WriteHeader()
	fingerprint := false
	for _, attr := range in.Attributes {
		switch attr.Type {
		case stun.AttrNonce:
			out.Add(stun.AttrNonce, []byte(nonce))
		case stun.AttrFingerprint:
			fingerprint = true
		default:
			out.Add(attr.Type, attr.Value)
		}
	}
	if fingerprint {
		if err := stun.Fingerprint.AddTo(out); err != nil {
			return nil, err
		}
	}
	return out.Raw, nil
}

// unknownAttributes builds the 420 answer to a request (whose header parsed) that carries
// comprehension-required attributes pion does not know, listing them (RFC 8489 section 14.9).
func unknownAttributes(req []byte, h stunwire.Header) ([]byte, error) {
	in := &stun.Message{Raw: append([]byte(nil), req[:stunwire.HeaderLen+h.Length]...)}
	if err := in.Decode(); err != nil {
		return nil, err
	}
	var unknown stun.UnknownAttributes
	for _, attr := range in.Attributes {
		if attr.Type.Required() && !attr.Type.Known() {
			unknown = append(unknown, attr.Type)
		}
	}
	resp, err := stun.Build(stun.NewTransactionIDSetter(in.TransactionID),
		stun.NewType(in.Type.Method, stun.ClassErrorResponse), stun.CodeUnknownAttribute, unknown)
	if err != nil {
		return nil, err
	}
	return resp.Raw, nil
}
