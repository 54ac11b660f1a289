//! `data import-images`: folders and .tar.gz archives of PNG/JPEG images with a
//! label CSV; every bad-image error names the CSV line and the image.

use std::io::Write;
use std::path::{Path, PathBuf};

use triaged::data::csv_import::{CsvImport, LabelLayout};
use triaged::data::images::{import_images, ImageImport};
use triaged::data::Inputs;

/// Writes a solid-colour image of `w`x`h` as PNG or JPEG (by extension).
fn write_image(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = image::RgbImage::from_pixel(w, h, image::Rgb(rgb));
    img.save(path).unwrap();
}

fn options(images: PathBuf, csv: PathBuf, resize: bool) -> ImageImport {
    ImageImport {
        images,
        labels: CsvImport {
            csv,
            labels: LabelLayout::Annotators(vec!["a1".into(), "a2".into()]),
            features: None,
            reference: Some("ref".into()),
            split: Some("split".into()),
            classes: Some(vec!["red".into(), "green".into()]),
            min_labels: 0,
            image_column: Some("image".into()),
            group: None,
        },
        height: 8,
        width: 8,
        resize,
    }
}

fn fixture(dir: &Path) -> (PathBuf, PathBuf) {
    let imgs = dir.join("imgs");
    write_image(&imgs.join("r/0.png"), 8, 8, [250, 0, 0]);
    write_image(&imgs.join("g/1.jpg"), 16, 16, [0, 250, 0]);
    let csv = dir.join("labels.csv");
    std::fs::write(
        &csv,
        "image,a1,a2,ref,split\nr/0.png,red,red,0,train\ng/1.jpg,1,0,1,test\n",
    )
    .unwrap();
    (imgs, csv)
}

#[test]
fn imports_a_folder_resizing_and_counting_labels() {
    let dir = tempfile::tempdir().unwrap();
    let (imgs, csv) = fixture(dir.path());
    let d = import_images(&options(imgs, csv, true)).unwrap();
    assert_eq!(d.len(), 2);
    assert_eq!(d.counts(0), [2, 0]);
    assert_eq!(d.counts(1), [1, 1]);
    assert_eq!(d.reference(1), Some(1));
    let Inputs::Images {
        height,
        width,
        channels,
        pixels,
    } = d.inputs()
    else {
        panic!("images")
    };
    assert_eq!((*height, *width, *channels), (8, 8, 3));
    assert_eq!(&pixels[..3], &[250, 0, 0]);
    // The JPEG was 16x16 and is resized; green stays green (JPEG is lossy).
    let second = &pixels[8 * 8 * 3..8 * 8 * 3 + 3];
    assert!(second[1] > 200 && second[0] < 40, "{second:?}");
}

#[test]
fn imports_a_tar_gz_archive() {
    let dir = tempfile::tempdir().unwrap();
    let (imgs, csv) = fixture(dir.path());
    let archive = dir.path().join("imgs.tar.gz");
    let file = std::fs::File::create(&archive).unwrap();
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        file,
        flate2::Compression::fast(),
    ));
    tar.append_dir_all(".", &imgs).unwrap();
    tar.into_inner().unwrap().finish().unwrap().flush().unwrap();
    let from_tar = import_images(&options(archive, csv.clone(), true)).unwrap();
    let from_dir = import_images(&options(imgs, csv, true)).unwrap();
    assert_eq!(from_tar.inputs(), from_dir.inputs());
}

#[test]
fn bad_images_fail_with_line_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let (imgs, csv) = fixture(dir.path());

    // Wrong size without resizing.
    let e = import_images(&options(imgs.clone(), csv.clone(), false)).unwrap_err();
    assert_eq!(e.line, Some(3), "{e}");
    assert!(
        e.to_string().contains("g/1.jpg") && e.to_string().contains("16x16"),
        "{e}"
    );

    // Missing file.
    let csv2 = dir.path().join("missing.csv");
    std::fs::write(
        &csv2,
        "image,a1,a2,ref,split\nr/0.png,0,0,0,train\nnope.png,0,1,0,train\n",
    )
    .unwrap();
    let e = import_images(&options(imgs.clone(), csv2, true)).unwrap_err();
    assert_eq!(e.line, Some(3), "{e}");
    assert!(e.to_string().contains("nope.png"), "{e}");

    // Unreadable image.
    std::fs::write(imgs.join("broken.png"), b"not an image").unwrap();
    let csv3 = dir.path().join("broken.csv");
    std::fs::write(&csv3, "image,a1,a2,ref,split\nbroken.png,0,0,0,train\n").unwrap();
    let e = import_images(&options(imgs.clone(), csv3.clone(), true)).unwrap_err();
    assert!(
        e.to_string().contains("broken.png") && e.to_string().contains("not a PNG or JPEG"),
        "{e}"
    );
    // A PNG cut short.
    let png = std::fs::read(imgs.join("r/0.png")).unwrap();
    std::fs::write(imgs.join("cut.png"), &png[..png.len() / 2]).unwrap();
    std::fs::write(&csv3, "image,a1,a2,ref,split\ncut.png,0,0,0,train\n").unwrap();
    let e = import_images(&options(imgs.clone(), csv3, true)).unwrap_err();
    assert!(
        e.to_string().contains("cut.png") && e.to_string().contains("unreadable"),
        "{e}"
    );

    // Label out of range.
    let csv4 = dir.path().join("label.csv");
    std::fs::write(&csv4, "image,a1,a2,ref,split\nr/0.png,0,5,0,train\n").unwrap();
    let e = import_images(&options(imgs.clone(), csv4, true)).unwrap_err();
    assert_eq!((e.line, e.column.as_deref()), (Some(2), Some("a2")), "{e}");

    // Not a folder or an archive.
    let e = import_images(&options(dir.path().join("labels.csv"), csv, true)).unwrap_err();
    assert!(e.to_string().contains("not a folder"), "{e}");
}
