package sim

import (
	"fmt"
	"strconv"
	"strings"
)

// fieldFunc returns the values a resource has for a filter name, and whether
// the filter name is known for this resource type.
type fieldFunc func(name string) ([]string, bool)

// matchFilters applies EC2 filter semantics
// (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/Using_Filtering.html):
// several values of one filter are ORed, several filters are ANDed, values
// may use * and ? wildcards, and tag:K / tag-key / tag-value look at tags.
func matchFilters(filters []filter, tags map[string]string, fields fieldFunc) (bool, *apiError) {
	for _, f := range filters {
		var have []string
		switch {
		case strings.HasPrefix(f.Name, "tag:"):
			if v, ok := tags[strings.TrimPrefix(f.Name, "tag:")]; ok {
				have = []string{v}
			}
		case f.Name == "tag-key":
			have = sortedKeys(tags)
		case f.Name == "tag-value":
			for _, k := range sortedKeys(tags) {
				have = append(have, tags[k])
			}
		default:
			v, ok := fields(f.Name)
			if !ok {
				return false, badRequest("InvalidParameterValue", fmt.Sprintf("The filter '%s' is invalid", f.Name))
			}
			have = v
		}
		if !anyMatch(f.Values, have) {
			return false, nil
		}
	}
	return true, nil
}

// matching keeps the items that match filters, in order; of gives an item's tags and filter fields.
func matching[T any](filters []filter, items []T, of func(T) (map[string]string, fieldFunc)) ([]T, *apiError) {
	var out []T
	for _, x := range items {
		tags, fields := of(x)
		ok, aerr := matchFilters(filters, tags, fields)
		if aerr != nil {
			return nil, aerr
		}
		if ok {
			out = append(out, x)
		}
	}
	return out, nil
}

func anyMatch(patterns, have []string) bool {
	for _, p := range patterns {
		for _, h := range have {
			if wildcard(p, h) {
				return true
			}
		}
	}
	return false
}

// wildcard matches s against p where * is any run and ? one character; \
// escapes them, as in EC2 filters.
func wildcard(p, s string) bool {
	pr, sr := []rune(p), []rune(s)
	var match func(i, j int) bool
	memo := map[[2]int]bool{}
	match = func(i, j int) bool {
		key := [2]int{i, j}
		if v, ok := memo[key]; ok {
			return v
		}
		var res bool
		switch {
		case i == len(pr):
			res = j == len(sr)
		case pr[i] == '*':
			res = match(i+1, j) || (j < len(sr) && match(i, j+1))
		case pr[i] == '?':
			res = j < len(sr) && match(i+1, j+1)
		case pr[i] == '\\' && i+1 < len(pr):
			res = j < len(sr) && sr[j] == pr[i+1] && match(i+2, j+1)
		default:
			res = j < len(sr) && sr[j] == pr[i] && match(i+1, j+1)
		}
		memo[key] = res
		return res
	}
	return match(0, 0)
}

// page cuts items for MaxResults/NextToken. EC2 tokens are opaque; ours
// encode the offset. min/max are the action's documented MaxResults range.
func page[T any](p params, items []T, minResults, maxResults int) ([]T, string, *apiError) {
	return pageWith(p, "MaxResults", "InvalidParameterValue", items, minResults, maxResults)
}

// pageWith is page with the service's own limit parameter and error code
// (Auto Scaling uses MaxRecords and ValidationError).
func pageWith[T any](p params, maxKey, code string, items []T, minResults, maxResults int) ([]T, string, *apiError) {
	start := 0
	if tok := p.get("NextToken"); tok != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(tok, "sim-page-"))
		if err != nil || !strings.HasPrefix(tok, "sim-page-") || n < 0 || n > len(items) {
			return nil, "", badRequest("InvalidNextToken", "The specified token is invalid or has expired.")
		}
		start = n
	}
	limit := len(items)
	if p.has(maxKey) {
		m, aerr := p.integer(maxKey, 0)
		if aerr != nil {
			return nil, "", aerr
		}
		if m < minResults || m > maxResults {
			return nil, "", badRequest(code, fmt.Sprintf("Value ( %d ) for parameter %s is invalid. Expecting a value between %d and %d.", m, maxKey, minResults, maxResults))
		}
		limit = m
	}
	end := min(start+limit, len(items))
	next := ""
	if end < len(items) {
		next = "sim-page-" + strconv.Itoa(end)
	}
	return items[start:end], next, nil
}
