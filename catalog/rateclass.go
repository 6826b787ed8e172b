package catalog

// RateClass groups tools for per-minute quotas. The set is fixed: light,
// medium and heavy. Its values index arrays of NumRateClasses.
type RateClass uint8

// The rate classes.
const (
	Light RateClass = iota
	Medium
	Heavy
	NumRateClasses = 3
)

var rateClassNames = [NumRateClasses]string{"light", "medium", "heavy"}

// String returns the class name as written in configuration ("heavy").
func (c RateClass) String() string {
	if int(c) < len(rateClassNames) {
		return rateClassNames[c]
	}
	return "invalid"
}

// ParseRateClass maps a configured name to its class.
func ParseRateClass(s string) (RateClass, bool) {
	for i, n := range rateClassNames {
		if n == s {
			return RateClass(i), true
		}
	}
	return 0, false
}
