"""Browser tests of the patient portal: Debian's Chromium driven by Playwright (sync API)."""
