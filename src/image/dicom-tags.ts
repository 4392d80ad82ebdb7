/**
 * The DICOM attributes pneumolens reads, by keyword (PS3.6), with the tag dicom-parser indexes
 * them by. The keywords are the names dcmjs writes (src/pacs) and Orthanc's simplified tags use, so
 * reading and writing share one vocabulary; test/image/dicom-details.test.ts checks every entry against
 * dcmjs's dictionary. Patient attributes are not here except PatientID, which only
 * dicomPatientKey reads (as a hash, see dicom.ts).
 */
export const TAG = {
  TransferSyntaxUID: 'x00020010',
  SOPClassUID: 'x00080016',
  Modality: 'x00080060',
  PatientID: 'x00100020',
  BodyPartExamined: 'x00180015',
  ViewPosition: 'x00185101',
  SamplesPerPixel: 'x00280002',
  PhotometricInterpretation: 'x00280004',
  PlanarConfiguration: 'x00280006',
  NumberOfFrames: 'x00280008',
  Rows: 'x00280010',
  Columns: 'x00280011',
  BitsAllocated: 'x00280100',
  BitsStored: 'x00280101',
  HighBit: 'x00280102',
  PixelRepresentation: 'x00280103',
  PixelPaddingValue: 'x00280120',
  PixelPaddingRangeLimit: 'x00280121',
  WindowCenter: 'x00281050',
  WindowWidth: 'x00281051',
  RescaleIntercept: 'x00281052',
  RescaleSlope: 'x00281053',
  VOILUTFunction: 'x00281056',
  LUTDescriptor: 'x00283002',
  LUTData: 'x00283006',
  VOILUTSequence: 'x00283010',
  PresentationLUTShape: 'x20500020',
  PixelData: 'x7fe00010',
} as const;

export type Keyword = keyof typeof TAG;

/** A tag as DICOM writes it, "(0028,0010)". */
export const tagText = (k: Keyword): string => `(${TAG[k].slice(1, 5)},${TAG[k].slice(5)})`;
