package cluster

import "time"

// SendGiveBacks runs the ticker's resend of unconfirmed give-backs now.
func SendGiveBacks(s *Spend) { s.sendGiveBacks(time.Now()) }
