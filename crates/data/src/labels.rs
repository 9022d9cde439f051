//! ImageNet-1k classes in the standard (sorted synset) order, with readable names.

const SYNSETS: &str = include_str!("imagenet_synsets.txt");

/// `(synset, name)` for the 1000 ImageNet classes, index = class id.
pub fn imagenet() -> Vec<(&'static str, &'static str)> {
    SYNSETS.lines().filter_map(|l| l.split_once('\t')).collect()
}

/// Readable name of ImageNet class `i`.
pub fn imagenet_name(i: usize) -> Option<&'static str> {
    SYNSETS
        .lines()
        .nth(i)
        .and_then(|l| l.split_once('\t'))
        .map(|(_, n)| n)
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousand_sorted_synsets() {
        let c = super::imagenet();
        assert_eq!(c.len(), 1000);
        assert_eq!(c[0], ("n01440764", "tench"));
        assert!(c.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(super::imagenet_name(1), Some("goldfish"));
    }
}
