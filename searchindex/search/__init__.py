"""Search: query terms and filters, cutoffs, hybrid word+vector fusion, few-shot reranking."""
