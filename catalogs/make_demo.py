"""Regenerate catalogs/demo.parquet, the demo campaign: ``python catalogs/make_demo.py``."""

from __future__ import annotations

from pathlib import Path

from moviegen.catalog.schema import write_catalog

ROWS = [
    {
        "campaign_id": "spring-launch",
        "clip_id": "sneaker-hero",
        "prompt": "A white running sneaker spins slowly on a pedestal, soft studio light, pastel backdrop",
        "negative_prompt": "blurry, text, watermark",
        "channels": ["tiktok", "instagram_reels", "youtube"],
        "duration_s": 3.0,
        "seed": 11,
        "style": "vivid",
        "caption": "Step into spring. New drop, Friday.",
        "hashtags": ["springdrop", "sneakers"],
    },
    {
        "campaign_id": "spring-launch",
        "clip_id": "city-run",
        "prompt": "A runner crosses a rain-washed city street at dawn, reflections on wet asphalt",
        "channels": ["tiktok", "youtube_shorts"],
        "duration_s": 2.5,
        "seed": 12,
        "style": "cinematic",
        "caption": "Every street is a track.",
        "hashtags": ["run", "city"],
        "aspect": "9:16",
    },
    {
        "campaign_id": "spring-launch",
        "clip_id": "trail-mountain",
        "prompt": "Aerial shot over a forest trail winding up a green mountain, morning mist",
        "channels": ["youtube", "linkedin"],
        "duration_s": 3.0,
        "style": "cool",
        "caption": "Go further this season.",
    },
    {
        "campaign_id": "coffee-autumn",
        "clip_id": "latte-pour",
        "prompt": "Close-up of milk poured into a latte, forming a leaf pattern, warm cafe light",
        "negative_prompt": "hands, faces",
        "channels": ["instagram_reels", "instagram_feed"],
        "duration_s": 2.0,
        "seed": 21,
        "style": "warm",
        "caption": "Your autumn ritual, perfected.",
        "hashtags": ["coffee", "autumn"],
    },
    {
        "campaign_id": "coffee-autumn",
        "clip_id": "beans-roast",
        "prompt": "Coffee beans tumbling in a drum roaster, sparks of light, slow motion",
        "channels": ["tiktok", "linkedin"],
        "duration_s": 2.0,
        "seed": 22,
        "style": "warm",
        "caption": "Roasted this morning.",
        "aspect": "1:1",
    },
    {
        "campaign_id": "coffee-autumn",
        "clip_id": "cafe-window",
        "prompt": "Rain on a cafe window, blurred street lights behind, a steaming cup on the sill",
        "channels": ["youtube_shorts", "x"],
        "duration_s": 3.0,
        "style": "mono",
        "caption": "Rainy days, warm cups.",
    },
    {
        "campaign_id": "fintech-trust",
        "clip_id": "app-glow",
        "prompt": "Abstract flowing ribbons of teal and gold light forming a shield shape, clean background",
        "channels": ["linkedin", "youtube", "x"],
        "duration_s": 2.5,
        "seed": 31,
        "style": "cinematic",
        "caption": "Banking that has your back.",
        "hashtags": ["fintech"],
    },
    {
        "campaign_id": "fintech-trust",
        "clip_id": "city-night",
        "prompt": "Time-lapse of a city skyline at night, lights switching on floor by floor",
        "channels": ["instagram_feed", "tiktok"],
        "duration_s": 3.0,
        "seed": 32,
        "style": "none",
        "caption": "Open 24/7, like your city.",
        "brief_owner": "growth-team",
    },
]


def main() -> None:
    target = Path(__file__).with_name("demo.parquet")
    write_catalog(ROWS, str(target))
    print(f"wrote {len(ROWS)} rows to {target}")


if __name__ == "__main__":
    main()
