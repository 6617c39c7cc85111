//! Fixed parameter counts for statements whose lists vary in length (`IN (...)` lists,
//! multi-row INSERTs). The driver caches prepared statements by their text, so a handful
//! of sizes keeps a few statements per connection instead of one per length.

/// `items` repeated at the end up to the smallest of `sizes` that holds them all (or left
/// as they are when none does). Only for lists where a repeated item changes nothing,
/// such as the values of `IN (...)`.
pub fn padded_to_statement_size<T: Clone>(items: &[T], sizes: &[usize]) -> Vec<T> {
    let size = sizes
        .iter()
        .copied()
        .filter(|size| *size >= items.len())
        .min()
        .unwrap_or(items.len());
    let mut padded = items.to_vec();
    if let Some(last) = items.last() {
        padded.resize(size, last.clone());
    }
    padded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_padded_with_their_last_item_to_the_next_statement_size() {
        let sizes = [1, 4, 16, 64];
        assert_eq!(padded_to_statement_size(&[7], &sizes), vec![7]);
        assert_eq!(
            padded_to_statement_size(&[1, 2, 3, 4, 5], &sizes),
            [vec![1, 2, 3, 4], vec![5; 12]].concat()
        );
        assert_eq!(padded_to_statement_size(&[0; 64], &sizes).len(), 64);
        assert_eq!(padded_to_statement_size(&[0; 70], &sizes).len(), 70);
        assert!(padded_to_statement_size::<u8>(&[], &sizes).is_empty());
    }
}
